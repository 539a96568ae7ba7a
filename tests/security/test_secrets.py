"""Secrets never in errors or logs (issue 15, the SASL finding)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from streaming.settings import StreamSettings


def test_sasl_password_not_in_error():
    """An incomplete SASL configuration printed the password in the start-up error."""
    with pytest.raises(ValidationError) as info:
        StreamSettings(
            kafka_security_protocol="SASL_SSL",
            kafka_sasl_mechanism="SCRAM-SHA-512",
            kafka_sasl_password="Pw-9xQ2-hunter",
        )
    assert "Pw-9xQ2-hunter" not in str(info.value) and "Pw-9xQ2-hunter" not in repr(info.value)
    assert "STREAMCL_KAFKA_SASL_USERNAME" in str(info.value)


def test_cross_field_settings_error_does_not_echo_secrets():
    """A cross-field settings error echoed every input value, the TLS key password among them."""
    with pytest.raises(ValidationError) as info:
        StreamSettings(kafka_security_protocol="SASL_SSL", kafka_ssl_password="Ssl-7kP2-pass")  # no mechanism
    assert "Ssl-7kP2-pass" not in str(info.value) and "kafka_sasl_mechanism" in str(info.value)
