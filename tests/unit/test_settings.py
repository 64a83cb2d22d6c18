from __future__ import annotations

from ipaddress import ip_network

import pytest

from infra.settings import SettingsError, load_settings


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("database_url", "mysql://root@localhost/db"),
        ("database_url", "postgresql://localhost:notaport/db"),
        ("database_url", "postgresql://localhost:5432"),
        ("nats_url", "http://localhost:4222"),
        ("nats_url", "nats://a:4222,http://b:4222"),
        ("events_stream_replicas", "7"),
        ("http_port", "70000"),
        ("nats_namespace", "Bad Name"),
    ],
)
def test_a_bad_value_names_the_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=f"CHRONIK_{name.upper()}"):
        load_settings(**{name: value})


def test_secrets_do_not_show_in_the_settings_repr() -> None:
    settings = load_settings(
        database_url="postgresql://app:hunter2@db:5432/chronik", operator_token="op-secret"
    )
    assert "hunter2" not in repr(settings)
    assert "op-secret" not in repr(settings)
    assert settings.database_url_value().endswith("@db:5432/chronik")


def test_a_nats_cluster_is_a_comma_separated_list_of_servers() -> None:
    settings = load_settings(nats_url="nats://a:4222, tls://b:4223")
    assert settings.nats_servers() == ["nats://a:4222", "tls://b:4223"]


def test_allowed_networks_come_as_a_comma_separated_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHRONIK_WEBHOOK_ALLOWED_NETWORKS", "127.0.0.0/8, ::1/128")
    settings = load_settings()
    assert settings.webhook_allowed_networks == [ip_network("127.0.0.0/8"), ip_network("::1/128")]


@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        ({"email_claim_lease": 10, "smtp_timeout": 30}, "CHRONIK_EMAIL_CLAIM_LEASE"),
        ({"smtp_tls": True, "smtp_starttls": True}, "exclude each other"),
        ({"audit_signing_keys": "k1:short"}, "CHRONIK_AUDIT_SIGNING_KEYS"),
        ({"scheduler_time_origin": "2026-11-25T00:00:00"}, "CHRONIK_SCHEDULER_TIME_ORIGIN"),
    ],
)
def test_settings_that_cannot_work_together_are_refused(
    overrides: dict[str, object], says: str
) -> None:
    with pytest.raises(SettingsError, match=says):
        load_settings(**overrides)


def test_audit_signing_keys_keep_their_order_and_hide_their_secrets() -> None:
    settings = load_settings(audit_signing_keys="new:" + "n" * 32 + ",old:" + "o" * 32)
    assert list(settings.audit_signing_keys) == ["new", "old"]
    assert "nnnn" not in repr(settings)
