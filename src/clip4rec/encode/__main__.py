"""``python -m clip4rec.encode encode|mismatch|similar ...`` - the stage-1 commands on their own."""

from clip4rec.encode.cli import make_app

make_app()()
