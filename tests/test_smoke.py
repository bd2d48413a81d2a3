from mediacluster.cli import main


def test_cli_help(capsys):
    assert main([]) == 2
    assert "cluster" in capsys.readouterr().out
