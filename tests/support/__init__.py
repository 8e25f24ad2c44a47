"""Scaffolding shared by the tests and the benchmarks (bench/ puts the repository root on sys.path): generated
catalogs, a toy encoder, a tiny CLIP, a server in a thread. None of it ships in the clip4rec package."""
