import json
import os
import stat

import pytest

from brokerguard.identity import cli as users_cli
from brokerguard.identity.credentials import CredentialsError, CredentialsFile, derive_verifier
from brokerguard.identity.sasl import PlainServer

PASSWORD = "correct horse battery staple"


def make(tmp_path, name="credentials.json"):
    return CredentialsFile(tmp_path / name, create=True)


def plain_ok(file: CredentialsFile, user: str, password: str) -> bool:
    import asyncio

    from brokerguard.identity import AuthenticationFailed

    try:
        asyncio.run(PlainServer(file, file.decoy_key).step(f"\0{user}\0{password}".encode()))
    except AuthenticationFailed:
        return False
    return True


def test_file_is_private_and_holds_no_password(tmp_path):
    file = make(tmp_path)
    file.add("svc-payments", PASSWORD, ["payments", "writers"])
    path = tmp_path / "credentials.json"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    text = path.read_text()
    assert PASSWORD not in text
    assert PASSWORD.encode().hex() not in text
    document = json.loads(text)
    account = document["users"]["svc-payments"]
    assert account["groups"] == ["payments", "writers"]
    assert set(account) == {"groups", "SCRAM-SHA-256", "SCRAM-SHA-512"}
    assert account["SCRAM-SHA-512"]["iterations"] == 8192
    assert set(account["SCRAM-SHA-512"]) == {"salt", "iterations", "stored_key", "server_key"}


def test_reopened_file_checks_the_password(tmp_path):
    make(tmp_path).add("svc", PASSWORD, ["g"])
    again = CredentialsFile(tmp_path / "credentials.json")
    assert again.users() == ["svc"]
    assert again.groups("svc") == frozenset({"g"})
    assert plain_ok(again, "svc", PASSWORD)
    assert not plain_ok(again, "svc", PASSWORD + "x")


def test_rotate_replaces_the_password_and_the_salt(tmp_path):
    file = make(tmp_path)
    file.add("svc", PASSWORD, ["g"], iterations=5000)
    before = file.account("svc")
    file.rotate("svc", "a new password")
    after = file.account("svc")
    assert after.sha512.salt != before.sha512.salt
    assert after.sha512.iterations == 5000  # kept
    assert after.groups == ["g"]
    assert plain_ok(file, "svc", "a new password")
    assert not plain_ok(file, "svc", PASSWORD)


def test_remove_and_set_groups(tmp_path):
    file = make(tmp_path)
    file.add("a", PASSWORD)
    file.add("b", PASSWORD, ["x"])
    file.set_groups("b", ["y", "z", "y"])
    assert file.groups("b") == frozenset({"y", "z"})
    file.remove("a")
    assert file.users() == ["b"]
    with pytest.raises(CredentialsError, match="no user 'a'"):
        file.remove("a")
    with pytest.raises(CredentialsError, match="already exists"):
        file.add("b", PASSWORD)


@pytest.mark.parametrize("name", ["", " lead", "tab\there", "x" * 300, "nul\0"])
def test_bad_user_names_are_refused(tmp_path, name):
    with pytest.raises(CredentialsError):
        make(tmp_path).add(name, PASSWORD)


def test_bad_passwords_and_iterations_are_refused(tmp_path):
    file = make(tmp_path)
    with pytest.raises(CredentialsError, match="empty"):
        file.add("a", "")
    with pytest.raises(CredentialsError, match="NUL"):
        file.add("a", "pass\0word")
    with pytest.raises(CredentialsError, match="iterations"):
        file.add("a", PASSWORD, iterations=1000)


def test_reload_if_changed_sees_another_writer(tmp_path):
    running = make(tmp_path)
    running.add("svc", PASSWORD)
    assert running.reload_if_changed() is False
    editor = CredentialsFile(tmp_path / "credentials.json")
    editor.rotate("svc", "rotated password")
    editor.add("new", PASSWORD)
    assert plain_ok(running, "svc", PASSWORD)  # not yet reloaded
    assert running.reload_if_changed() is True
    assert running.users() == ["new", "svc"]
    assert plain_ok(running, "svc", "rotated password")
    assert not plain_ok(running, "svc", PASSWORD)
    assert running.reload_if_changed() is False


def test_a_broken_edit_keeps_the_loaded_users(tmp_path, caplog):
    running = make(tmp_path)
    running.add("svc", PASSWORD)
    (tmp_path / "credentials.json").write_text("{not json")
    assert running.reload_if_changed() is False
    assert running.users() == ["svc"]
    assert "not valid JSON" in caplog.text


@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON"),
    ('{"users": {"a": {"groups": []}}}', "SCRAM-SHA-256"),
    ('{"version": 2}', "unknown version"),
    ('{"users": [], "extra": 1}', "credentials.json"),
])
def test_a_bad_file_is_named_in_the_error(tmp_path, content, message):
    path = tmp_path / "credentials.json"
    path.write_text(content)
    with pytest.raises(CredentialsError, match=message) as err:
        CredentialsFile(path)
    assert str(path) in str(err.value)


def test_low_iteration_counts_in_the_file_are_refused(tmp_path):
    verifier = derive_verifier("SCRAM-SHA-256", "pw", iterations=10)
    import msgspec

    entry = msgspec.json.encode(verifier).decode()
    path = tmp_path / "credentials.json"
    path.write_text('{"users": {"a": {"SCRAM-SHA-256": %s, "SCRAM-SHA-512": %s}}}' % (entry, entry))
    with pytest.raises(CredentialsError, match="4096"):
        CredentialsFile(path)


def test_missing_file_says_how_to_create_it(tmp_path):
    with pytest.raises(CredentialsError, match="brokerguard users add"):
        CredentialsFile(tmp_path / "absent.json")


def test_decoy_key_is_stable_and_private(tmp_path):
    file = make(tmp_path)
    file.add("a", PASSWORD)
    assert CredentialsFile(tmp_path / "credentials.json").decoy_key == file.decoy_key
    assert len(file.decoy_key) == 32


# -- brokerguard users ---------------------------------------------------------------------

def run_cli(argv, stdin_text=None, monkeypatch=None):
    import argparse

    parser = argparse.ArgumentParser()
    users_cli.add_parser(parser.add_subparsers(dest="command", required=True))
    if stdin_text is not None:
        import io

        monkeypatch.setattr("sys.stdin", io.StringIO(stdin_text))
    args = parser.parse_args(argv)
    return args.handler(args)


def test_cli_add_generates_a_password_shown_once(tmp_path, capsys):
    path = str(tmp_path / "creds.json")
    assert run_cli(["users", "add", "svc", "--groups", "a,b", "--credentials", path]) == 0
    out = capsys.readouterr()
    password = out.out.strip()
    assert len(password) >= 24
    assert password not in (tmp_path / "creds.json").read_text()
    assert plain_ok(CredentialsFile(path), "svc", password)

    assert run_cli(["users", "list", "--credentials", path]) == 0
    listing = capsys.readouterr().out
    assert listing == "svc\ta,b\n"
    assert password not in listing


def test_cli_password_stdin_rotate_groups_remove(tmp_path, capsys, monkeypatch):
    path = str(tmp_path / "creds.json")
    run_cli(["users", "add", "svc", "--password-stdin", "--iterations", "4096", "--credentials", path],
            stdin_text="from stdin\n", monkeypatch=monkeypatch)
    assert capsys.readouterr().out == ""  # nothing generated, nothing shown
    assert plain_ok(CredentialsFile(path), "svc", "from stdin")
    run_cli(["users", "rotate", "svc", "--password-stdin", "--credentials", path],
            stdin_text="second\n", monkeypatch=monkeypatch)
    assert plain_ok(CredentialsFile(path), "svc", "second")
    run_cli(["users", "groups", "svc", "x,y", "--credentials", path])
    assert CredentialsFile(path).groups("svc") == frozenset({"x", "y"})
    run_cli(["users", "remove", "svc", "--credentials", path])
    assert CredentialsFile(path).users() == []


def test_cli_reads_the_file_name_from_the_gateway_config(tmp_path, capsys):
    creds = tmp_path / "creds.json"
    gateway = tmp_path / "gateway.yaml"
    gateway.write_text(f"identity:\n  credentials_file: {creds}\nkafka: {{}}\n")
    assert run_cli(["users", "add", "svc", "--config", str(gateway)]) == 0
    assert CredentialsFile(creds).users() == ["svc"]


def test_cli_without_a_file_says_what_to_give(tmp_path):
    from brokerguard.errors import ConfigError

    with pytest.raises(ConfigError, match="--credentials FILE or --config"):
        run_cli(["users", "list"])
