"""Domain errors: each carries the HTTP status and the error code the APIs answer with."""


class CancelDeskError(Exception):
    status = 400
    code = "error"

    def __init__(self, message, *, code=None, details=None):
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        self.details = details or {}

    def to_dict(self):
        body = {"code": self.code, "message": self.message}
        body.update(self.details)
        return body


class ValidationFailed(CancelDeskError):
    status = 400
    code = "validation_error"


class InvalidState(CancelDeskError):
    status = 400
    code = "invalid_state"


class NotFound(CancelDeskError):
    status = 404
    code = "not_found"


class Forbidden(CancelDeskError):
    status = 403
    code = "forbidden"


class Blocked(CancelDeskError):
    """A business blocker (billing hold, shipment in transit) or a stale version."""

    status = 409
    code = "conflict"


class ConcurrentModification(Blocked):
    code = "concurrent_modification"

    def __init__(self, current_version, message=None):
        super().__init__(message or "This order was changed by someone else. Refresh to see "
                         "the current version and try again.",
                         details={"current_version": current_version})


class DeliveryClaimed(Blocked):
    """A refund or notice changed while this request acted on it: another click, or a worker
    picked it up. Nothing was changed by this request."""

    code = "delivery_claimed"


class RetryInProgress(Blocked):
    """A bulk job's failures are already being retried by a job still queued or running."""

    code = "bulk_retry_in_progress"
