"""The test cluster's override profile sets only keys that the user's SLURM profile has."""

from __future__ import annotations

import yaml

from tests.slurm.cluster import TEST_PROFILE, USER_PROFILE


def _profile(folder) -> tuple[dict, str]:
    text = (folder / "config.yaml").read_text()
    return yaml.safe_load(text), text


def test_override_uses_the_keys_a_user_edits_in_the_slurm_profile():
    user, user_text = _profile(USER_PROFILE)
    test, _ = _profile(TEST_PROFILE)
    assert user["executor"] == "slurm" and "executor" not in test
    assert set(test["default-resources"]) <= set(user["default-resources"])
    assert set(test["set-resources"]) == set(user["set-resources"])
    for rule, resources in test["set-resources"].items():
        assert set(resources) <= set(user["set-resources"][rule]), rule
    for key in set(test) - {"default-resources", "set-resources"}:
        # set in the user's profile, or shown there (commented) with what it is for
        assert key in user or f"# {key}:" in user_text, key
