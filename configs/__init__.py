"""Run configuration: frozen dataclasses per concern, presets, overrides, config.json."""

from configs.io import (
    apply_overrides,
    from_dict,
    read_config,
    resolve,
    to_dict,
    write_config,
)
from configs.presets import PRESETS, preset
from configs.schema import (
    CollectorConfig,
    DataConfig,
    DeviceConfig,
    ExportConfig,
    ModelConfig,
    PrivacyConfig,
    RunConfig,
    SecAggConfig,
    ServerConfig,
    TrainConfig,
)

__all__ = [
    "PRESETS", "CollectorConfig", "DataConfig", "DeviceConfig", "ExportConfig", "ModelConfig", "PrivacyConfig",
    "RunConfig", "SecAggConfig", "ServerConfig", "TrainConfig", "apply_overrides", "from_dict", "preset",
    "read_config", "resolve", "to_dict", "write_config",
]
