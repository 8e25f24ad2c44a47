"""On top of the stages: what chains them (train then evaluate), grids of Runs (`compare`), the demo, and the
reports they render. The one package that may import every stage."""
