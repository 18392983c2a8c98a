"""Kafka's jars for the local dev broker, from Maven Central through `streams/kafka/pom.xml`
(Kafka pinned there), into `$IPR_CACHE_DIR` (default `~/.cache/ipr-router`), once.

Beside them, `bin/kafka-console-consumer.sh` and `bin/kafka-console-producer.sh` run Kafka's
console tools from those jars, so the README's lines work against the local broker without a
Kafka distribution (its log4j settings in `tools-log4j.properties`: warnings to stderr)."""

from __future__ import annotations

import fcntl
import hashlib
import logging
import shutil
import subprocess
import tempfile
from pathlib import Path

from ipr_model.artifacts.cache import cache_dir as ipr_cache_dir
from schemas.errors import IprError

log = logging.getLogger(__name__)

KAFKA_VERSION = "3.9.1"  # keep in step with streams/kafka/pom.xml
POM = Path(__file__).parent / "pom.xml"
ENV_BOOTSTRAP = "IPR_KAFKA_BOOTSTRAP"
_MARKER = ".complete"
TOOLS = {  # script -> main class (the consumer moved to kafka-tools in Kafka 3.7)
    "kafka-console-consumer.sh": "org.apache.kafka.tools.consumer.ConsoleConsumer",
    "kafka-console-producer.sh": "kafka.tools.ConsoleProducer",
}
_TOOL_SCRIPT = """#!/bin/sh
# Kafka's {main} from the jars beside this folder (written by streams/kafka/jars.py)
home="$(cd "$(dirname "$0")/.." && pwd)"
exec java -Dlog4j.configuration="file:$home/tools-log4j.properties" -cp "$home/libs/*" \\
  {main} "$@"
"""
_TOOLS_LOG4J = """log4j.rootLogger=WARN, stderr
log4j.appender.stderr=org.apache.log4j.ConsoleAppender
log4j.appender.stderr.Target=System.err
log4j.appender.stderr.layout=org.apache.log4j.PatternLayout
log4j.appender.stderr.layout.ConversionPattern=[%d] %p %m (%c)%n
"""


class BrokerError(IprError, RuntimeError):
    """The local broker could not be provisioned, started or reached."""



def ensure_jars(cache_dir: Path | str | None = None) -> Path:
    """The directory holding Kafka's runtime jars, downloading them with Maven the first time.

    Maven writes into a temporary directory that is renamed into place, then a marker holding the
    pom's sha256 is written: a half download is never used, and a changed pom downloads again.
    """
    home = Path(cache_dir) if cache_dir is not None else ipr_cache_dir()
    root = home / f"kafka-{KAFKA_VERSION}"
    libs, marker = root / "libs", root / _MARKER
    pom_sha = hashlib.sha256(POM.read_bytes()).hexdigest()
    if _marker_ok(marker, pom_sha) and libs.is_dir():
        _write_tools(root)
        return libs
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be downloading the same jars
        if _marker_ok(marker, pom_sha) and libs.is_dir():
            return libs
        mvn = shutil.which("mvn")
        if mvn is None:
            raise BrokerError(
                f"Maven (`mvn`) is needed once to download Kafka {KAFKA_VERSION}'s jars into "
                f"{libs}; install it, or set {ENV_BOOTSTRAP} to an existing Kafka"
            )
        tmp = Path(tempfile.mkdtemp(prefix="libs.tmp-", dir=root))
        try:
            log.info("downloading Kafka %s jars into %s", KAFKA_VERSION, libs)
            cmd = [mvn, "-q", "-B", "-f", str(POM), "dependency:copy-dependencies",
                   "-DincludeScope=runtime", f"-DoutputDirectory={tmp}"]
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if done.returncode != 0 or not any(tmp.glob("kafka_2.13-*.jar")):
                tail = (done.stdout + done.stderr).strip()[-3000:]
                raise BrokerError(f"`{' '.join(cmd)}` failed (exit {done.returncode}):\n{tail}")
            marker.unlink(missing_ok=True)
            shutil.rmtree(libs, ignore_errors=True)
            tmp.rename(libs)
            marker.write_text(pom_sha + "\n")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    _write_tools(root)
    return libs


def _write_tools(root: Path) -> None:
    """The console tools' scripts and log4j settings under ``root`` (rewritten when changed)."""
    files = {root / "tools-log4j.properties": _TOOLS_LOG4J}
    files.update({root / "bin" / name: _TOOL_SCRIPT.format(main=main)
                  for name, main in TOOLS.items()})
    for path, text in files.items():
        if not path.is_file() or path.read_text() != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(text)
            tmp.chmod(0o755 if path.parent.name == "bin" else 0o644)
            tmp.replace(path)


def _marker_ok(marker: Path, pom_sha: str) -> bool:
    try:
        return marker.read_text().strip() == pom_sha
    except OSError:
        return False
