from ehrdx.cli import app

app()
