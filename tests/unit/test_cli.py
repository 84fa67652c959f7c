"""sgl-deploy's verb loading: every verb module loads, and one that does not is an error."""

from __future__ import annotations

import sys
import types

import pytest

from sgl_deploy import cli


def test_every_verb_module_registers():
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "verb")
    # one verb (at least) per module, so a module whose register() does nothing is visible too
    assert len(sub.choices) >= len(cli.VERB_MODULES)


def test_missing_verb_module_fails_loudly(monkeypatch):
    monkeypatch.setattr(cli, "VERB_MODULES", cli.VERB_MODULES + ("sgl_deploy.no_such_verb",))
    with pytest.raises(cli.VerbImportError, match="sgl_deploy.no_such_verb"):
        cli.build_parser()


def test_verb_module_with_broken_import_fails_loudly(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "sgl_deploy._broken_verb", None)  # import raises ImportError
    monkeypatch.setattr(cli, "VERB_MODULES", ("sgl_deploy._broken_verb",) + cli.VERB_MODULES)
    assert cli.main(["--help"]) == 1
    err = capsys.readouterr().err
    assert "sgl_deploy._broken_verb failed to import" in err


def test_verb_module_without_register_fails(monkeypatch):
    monkeypatch.setitem(sys.modules, "sgl_deploy._no_register", types.ModuleType("sgl_deploy._no_register"))
    monkeypatch.setattr(cli, "VERB_MODULES", ("sgl_deploy._no_register",))
    with pytest.raises(cli.VerbImportError, match="has no register"):
        cli.build_parser()
