from llamaforge_cli.main import entry

entry()
