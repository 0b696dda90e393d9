"""OpenTelemetry tracing (docs/operations.md, "Tracing").

``tracer.tracer_for(config)`` is None when ``tracing:`` is absent: then no span is made.
Otherwise every request records its spans as small records (``spans``) and an ended
trace is exported by a thread (``export``, the only module importing the SDK).
"""

from edgegw.tracing.spans import CURRENT, RESEND, Span, current_trace_id
from edgegw.tracing.tracer import Tracer, tracer_for

__all__ = ["CURRENT", "RESEND", "Span", "Tracer", "current_trace_id", "tracer_for"]
