"""The root of every error the project raises on purpose, here in the lowest package so that
every package can derive from it; each error says what was expected and what was found. The
``ipr`` command reports any of them in one line on stderr and exits 2.

IprError
 ├── schemas.codec.SchemaError (ValueError)           a payload is not the expected event
 ├── ipr_model.errors.DatasetError, ArtifactError, ExportError, RoutingInputError (ValueError)
 ├── streams.kafka.admin.KafkaAdminError (RuntimeError)  a topic not created or described
 │    └── KafkaConnectError                              the cluster cannot be reached
 ├── streams.kafka.jars.BrokerError (RuntimeError)      the local dev broker would not run
 ├── streams.worker.service.WorkerConfigError (ValueError)  the worker's configuration
 └── streams.cli.console.UserError                     what the user asked the ``ipr`` command
"""


class IprError(Exception):
    """Root of every error this project raises on purpose (a user's, a configuration's, an
    input's mistake): never a bug."""
