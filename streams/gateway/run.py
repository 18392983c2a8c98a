"""Running the gateway: uvicorn serving ``streams.gateway.app`` until SIGINT or SIGTERM, then a
graceful stop (requests in flight answered, the reply topic deleted)."""

from __future__ import annotations

import logging
import sys

from streams.gateway.settings import GatewaySettings

log = logging.getLogger(__name__)


def serve(settings: GatewaySettings) -> None:
    """Serve until stopped; one line on stderr once ready (the reply channel positioned)."""
    import uvicorn

    from ipr_model.artifacts.manifest import read_manifest
    from streams.gateway.app import create_app
    from streams.gateway.keys import read_keys
    from streams.kafka.admin import check_connection

    models = list(read_manifest(settings.artifacts, verify=False).models)
    keys = read_keys(settings.keys_file) if settings.keys_file is not None else None
    check_connection(settings)  # one line now, rather than retrying forever

    def ready(channel) -> None:
        tenants = "no keys" if keys is None else f"{len(keys)} keys"
        print(f"ipr gateway ready at http://{settings.host}:{settings.port} (instance "
              f"{settings.instance_id}, replies on {channel.topic}, {len(models)} models, "
              f"alias {settings.alias!r}, {tenants})", file=sys.stderr, flush=True)

    app = create_app(settings, models, keys, on_ready=ready)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level="warning",
                            access_log=False, lifespan="on", timeout_graceful_shutdown=30)
    uvicorn.Server(config).run()
