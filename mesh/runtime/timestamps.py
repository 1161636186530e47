"""`google.protobuf.Timestamp` from the timezone-aware datetimes the services keep."""

from __future__ import annotations

from datetime import datetime

from google.protobuf import timestamp_pb2


def to_timestamp(value: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)
    return stamp
