"""ansible.cfg names only folders that exist (a setting for a missing folder is drift)."""

from __future__ import annotations

import configparser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PATH_SETTINGS = ("roles_path", "filter_plugins", "action_plugins", "library", "module_utils",
                 "lookup_plugins", "callback_plugins")


def missing(cfg_text: str) -> list[str]:
    cfg = configparser.ConfigParser()
    cfg.read_string(cfg_text)
    return [f"{key} = {path}" for key in PATH_SETTINGS
            for path in filter(None, cfg["defaults"].get(key, "").split(":")) if not (ROOT / path).is_dir()]


def test_ansible_cfg_paths_exist():
    assert missing((ROOT / "ansible.cfg").read_text()) == []


@pytest.mark.parametrize("text", ["[defaults]\nlibrary = plugins/no_such_folder\n",
                                  "[defaults]\nroles_path = roles:nowhere\n"])
def test_a_missing_folder_fails(text):
    assert missing(text)
