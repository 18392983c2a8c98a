"""The console tools' scripts beside the cached jars (running them: the integration test)."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET

from streams.kafka.jars import POM, TOOLS, _write_tools


def test_the_pom_brings_the_console_consumers_artifact_without_connect():
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    deps = {d.findtext("m:artifactId", namespaces=ns): d
            for d in ET.parse(POM).getroot().iterfind("m:dependencies/m:dependency", ns)}
    assert "kafka-tools" in deps  # org.apache.kafka.tools.consumer.ConsoleConsumer
    excluded = [e.findtext("m:artifactId", namespaces=ns)
                for e in deps["kafka-tools"].iterfind("m:exclusions/m:exclusion", ns)]
    assert excluded == ["connect-runtime"]
    assert "streams.broker" not in POM.read_text()  # the module is streams.kafka.local


def test_each_console_tool_gets_an_executable_script_naming_its_class(tmp_path):
    _write_tools(tmp_path)
    for name, main in TOOLS.items():
        script = tmp_path / "bin" / name
        assert os.access(script, os.X_OK)
        text = script.read_text()
        assert main in text and 'libs/*' in text and "tools-log4j.properties" in text
    assert TOOLS["kafka-console-consumer.sh"] == "org.apache.kafka.tools.consumer.ConsoleConsumer"
    assert "log4j.rootLogger=WARN, stderr" in (tmp_path / "tools-log4j.properties").read_text()
    before = (tmp_path / "bin" / "kafka-console-consumer.sh").stat().st_mtime_ns
    _write_tools(tmp_path)  # unchanged: not rewritten
    assert (tmp_path / "bin" / "kafka-console-consumer.sh").stat().st_mtime_ns == before
