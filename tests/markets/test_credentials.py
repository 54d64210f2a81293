"""Keys come from a private file or the environment, and never show in messages."""

from __future__ import annotations

import pytest

from appliance.markets import CredentialsError, load_credentials

SECRET = "s3cr3t-value-that-must-not-show"


def test_a_private_file_is_read(tmp_path):
    f = tmp_path / "keys.toml"
    f.write_text(f'api_key = "k-123"\nsecret = "{SECRET}"\n')
    f.chmod(0o600)
    creds = load_credentials(f, None)
    assert creds.ccxt() == {"apiKey": "k-123", "secret": SECRET}
    assert SECRET not in repr(creds) and SECRET not in str(creds)
    assert creds.scrub(f"error with {SECRET} inside") == "error with *** inside"


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_a_file_others_may_read_is_refused(tmp_path, mode):
    f = tmp_path / "keys.toml"
    f.write_text(f'api_key = "k"\nsecret = "{SECRET}"\n')
    f.chmod(mode)
    with pytest.raises(CredentialsError, match=f"mode {mode:04o}.*chmod 600") as err:
        load_credentials(f, None)
    assert SECRET not in str(err.value)


def test_a_broken_file_is_refused_without_quoting_it(tmp_path):
    f = tmp_path / "keys.toml"
    f.write_text(f'api_key = "k"\nsecret = {SECRET}\n')  # not TOML: unquoted
    f.chmod(0o600)
    with pytest.raises(CredentialsError, match="not readable TOML") as err:
        load_credentials(f, None)
    assert SECRET not in str(err.value)


def test_environment_variables(monkeypatch):
    monkeypatch.setenv("DM_TEST_API_KEY", "k-env")
    monkeypatch.setenv("DM_TEST_SECRET", SECRET)
    assert load_credentials(None, "DM_TEST").ccxt() == {"apiKey": "k-env", "secret": SECRET}
    monkeypatch.delenv("DM_TEST_SECRET")
    with pytest.raises(CredentialsError, match="DM_TEST_SECRET are not set"):
        load_credentials(None, "DM_TEST")
