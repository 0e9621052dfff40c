//! One error type for the request path. Each variant knows its status code and the
//! short reason sent to the client; internal detail is logged once, never sent.

use std::io;

use http::{HeaderValue, Response, StatusCode, header};

use crate::auth::AuthError;
use crate::catalog::RemoveError;
use crate::http::body::{self, Body};
use crate::index::{IndexError, QuotaError};
use crate::metrics::{Busy, Outcome, QuotaKind};
use crate::path::PathError;
use crate::store::{CommitError, CreateError, StoreError};
use crate::telemetry::Throttle;

/// Seconds a client told 503 should wait before it tries again.
pub const RETRY_AFTER: &str = "5";

/// Requests that found no descriptor left come in floods: one line a minute.
static NO_DESCRIPTORS: Throttle = Throttle::new();
/// So do requests while the index or the store cannot be reached.
static UNAVAILABLE: Throttle = Throttle::new();

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("bad path: {0}")]
    BadPath(&'static str),
    /// Path and file name too long for a file's metadata to hold.
    #[error("path too long")]
    PathTooLong,
    #[error("not found")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("content-length required")]
    LengthRequired,
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    #[error("file too large")]
    TooLarge,
    #[error("already exists")]
    Exists,
    #[error("body shorter than content-length")]
    ShortBody,
    #[error("body longer than content-length")]
    LongBody,
    #[error("upload timed out")]
    Timeout,
    #[error("precondition failed")]
    PreconditionFailed,
    /// Which limit was reached.
    #[error("insufficient storage")]
    InsufficientStorage(QuotaKind),
    #[error("quota exceeded")]
    UserQuota,
    #[error("shutting down")]
    ShuttingDown,
    /// A cap or the descriptor limit was reached. Worth retrying shortly.
    #[error("busy, try again shortly")]
    Busy(Busy),
    #[error("request header fields too large")]
    HeadTooLarge,
    /// The index or the store cannot be reached; names which, and why.
    #[error("{0} unavailable, try again shortly")]
    Unavailable(&'static str, String),
    #[error("internal error")]
    Internal(#[source] io::Error),
}

impl From<PathError> for ApiError {
    fn from(e: PathError) -> Self {
        match e {
            PathError::OutsideBase => ApiError::NotFound,
            PathError::Invalid(why) => ApiError::BadPath(why),
        }
    }
}

impl From<QuotaError> for ApiError {
    fn from(e: QuotaError) -> Self {
        match e {
            QuotaError::Total => ApiError::InsufficientStorage(QuotaKind::Total),
            QuotaError::User => ApiError::UserQuota,
        }
    }
}

impl From<IndexError> for ApiError {
    fn from(e: IndexError) -> Self {
        match e {
            IndexError::Exists => ApiError::Exists,
            IndexError::Quota(q) => q.into(),
            IndexError::Unavailable(why) => ApiError::Unavailable("index", why),
        }
    }
}

impl From<CreateError> for ApiError {
    fn from(e: CreateError) -> Self {
        match e {
            CreateError::NoSpace => ApiError::InsufficientStorage(QuotaKind::FreeSpace),
            CreateError::Io(e) => e.into(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Create(e) => e.into(),
            StoreError::Commit(e) => e.into(),
        }
    }
}

impl From<RemoveError> for ApiError {
    fn from(e: RemoveError) -> Self {
        match e {
            RemoveError::Index(e) => e.into(),
            RemoveError::Bytes(e) => e.into(),
        }
    }
}

impl From<CommitError> for ApiError {
    fn from(e: CommitError) -> Self {
        match e {
            CommitError::Exists => ApiError::Exists,
            CommitError::Io(e) => e.into(),
        }
    }
}

impl From<io::Error> for ApiError {
    fn from(e: io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => {
                ApiError::InsufficientStorage(QuotaKind::DiskFull)
            }
            // No descriptor left, for now (docs/limits.md).
            _ if crate::store::is_unreachable(&e) => {
                ApiError::Unavailable("storage", e.to_string())
            }
            _ if matches!(
                rustix::io::Errno::from_io_error(&e),
                Some(rustix::io::Errno::MFILE | rustix::io::Errno::NFILE)
            ) =>
            {
                ApiError::Busy(Busy::Descriptors)
            }
            _ => ApiError::Internal(e),
        }
    }
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Auth(e) => e.status(),
            ApiError::BadPath(_)
            | ApiError::BadRequest(_)
            | ApiError::ShortBody
            | ApiError::LongBody => StatusCode::BAD_REQUEST,
            ApiError::PathTooLong => StatusCode::URI_TOO_LONG,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::LengthRequired => StatusCode::LENGTH_REQUIRED,
            ApiError::TooLarge | ApiError::UserQuota => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Exists => StatusCode::CONFLICT,
            ApiError::Timeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
            ApiError::InsufficientStorage(_) => StatusCode::INSUFFICIENT_STORAGE,
            ApiError::ShuttingDown | ApiError::Busy(_) | ApiError::Unavailable(..) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::HeadTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// How a PUT that ended in this error ended.
    pub fn upload_outcome(&self) -> Outcome {
        match self {
            ApiError::Auth(_) => Outcome::Refused,
            ApiError::TooLarge => Outcome::TooLarge,
            ApiError::Exists => Outcome::Conflict,
            ApiError::UserQuota => Outcome::Quota,
            ApiError::InsufficientStorage(_) => Outcome::NoSpace,
            ApiError::ShortBody => Outcome::Aborted,
            ApiError::Timeout => Outcome::Timeout,
            ApiError::BadPath(_)
            | ApiError::PathTooLong
            | ApiError::BadRequest(_)
            | ApiError::LengthRequired
            | ApiError::LongBody
            | ApiError::NotFound
            | ApiError::MethodNotAllowed
            | ApiError::PreconditionFailed
            | ApiError::HeadTooLarge => Outcome::BadRequest,
            ApiError::Busy(_) => Outcome::Busy,
            ApiError::ShuttingDown | ApiError::Unavailable(..) | ApiError::Internal(_) => {
                Outcome::Error
            }
        }
    }

    /// Which limit refused an upload, if one did.
    pub fn quota_kind(&self) -> Option<QuotaKind> {
        match self {
            ApiError::UserQuota => Some(QuotaKind::User),
            ApiError::InsufficientStorage(kind) => Some(*kind),
            _ => None,
        }
    }

    pub fn into_response(self) -> Response<Body> {
        match &self {
            ApiError::Internal(e) => tracing::error!(error = %e, "internal error"),
            ApiError::Unavailable(what, why) => {
                if let Some(suppressed) = UNAVAILABLE.ready() {
                    tracing::warn!(suppressed, error = %why, "{what} unavailable: answering 503");
                }
            }
            ApiError::Busy(Busy::Descriptors) => {
                if let Some(suppressed) = NO_DESCRIPTORS.ready() {
                    tracing::warn!(suppressed, "no file descriptor left: answering 503");
                }
            }
            _ => {}
        }
        let mut response = Response::new(body::full(self.to_string()));
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        match self {
            ApiError::MethodNotAllowed => {
                headers.insert(
                    header::ALLOW,
                    HeaderValue::from_static(crate::http::cors::METHODS),
                );
            }
            ApiError::Busy(_) | ApiError::ShuttingDown | ApiError::Unavailable(..) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER));
            }
            // Whatever remains of the request body is not worth reading.
            ApiError::Timeout | ApiError::ShortBody | ApiError::LongBody => {
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        response
    }
}
