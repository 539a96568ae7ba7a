"""streamcl's bottom layer: events, settings, Kafka wrappers, the embedded broker, the joiner,
replay of data files and metrics. Imports neither ``learners`` nor ``services``."""

from streaming.errors import BrokerError, ConfigError, InvalidEvent, RegistryError, StreamclError
from streaming.events import (
    DLQ_REASONS,
    DeadLetter,
    DriftEvent,
    FeedbackEvent,
    LabeledExample,
    ModelEvent,
    PredictionEvent,
    Record,
    TextEvent,
)
from streaming.settings import StreamSettings, Topics

__all__ = [
    "DLQ_REASONS",
    "BrokerError",
    "ConfigError",
    "DeadLetter",
    "DriftEvent",
    "FeedbackEvent",
    "InvalidEvent",
    "LabeledExample",
    "ModelEvent",
    "PredictionEvent",
    "Record",
    "RegistryError",
    "StreamSettings",
    "StreamclError",
    "TextEvent",
    "Topics",
]
