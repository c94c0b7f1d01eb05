"""The error-name table against the Errors enum of the kafka-clients jar the build pins."""
import subprocess

from devstack.kafka import ensure_jars

from brokerguard.plugins.kafka.errors import ERROR_NAMES, error_name

LIST_ERRORS = """
import org.apache.kafka.common.protocol.Errors;
public class ListErrors {
    public static void main(String[] args) {
        for (Errors e : Errors.values()) System.out.println(e.code() + " " + e.name());
    }
}
"""


def test_the_table_is_the_brokers_enum(tmp_path):
    source = tmp_path / "ListErrors.java"
    source.write_text(LIST_ERRORS)
    out = subprocess.run(["java", "-cp", f"{ensure_jars()}/*", str(source)], capture_output=True, text=True,
                         check=True, timeout=120)
    listed = {int(code): name for code, name in (line.split() for line in out.stdout.splitlines())}
    assert ERROR_NAMES == listed


def test_unknown_codes_keep_their_number():
    assert error_name(87) == "INVALID_RECORD"
    assert error_name(9999) == "ERROR_9999"
