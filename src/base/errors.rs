//! memori's errors: one type that carries an SQLSTATE, a message, a detail and a hint.
//!
//! The type is plain Rust so the embedding providers can return it without a database; `raise`
//! turns it into a PostgreSQL ERROR. Messages never hold an API key: providers mask it before an
//! error is built (see `providers::mask`).

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::{PgLogLevel, PgSqlErrorCode};
use std::fmt;

/// The SQLSTATEs memori raises (see README "Troubleshooting").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    /// 22023: a bad argument or setting.
    InvalidParameterValue,
    /// 22004: a NULL where a value is required.
    NullValueNotAllowed,
    /// 22000: the provider's reply cannot be used (not JSON, too few vectors, wrong width).
    DataException,
    /// 23503: a referenced row (conversation) does not exist.
    ForeignKeyViolation,
    /// 23505: an id that must be new exists already (memori_import).
    UniqueViolation,
    /// 28000: no API key, or the provider refused it (401/403).
    InvalidAuthorization,
    /// 42501: the caller may not do this.
    InsufficientPrivilege,
    /// 08001: the provider could not be reached (refused, DNS, TLS).
    ConnectionUnavailable,
    /// 08006: the provider stopped answering (timeout).
    ConnectionFailure,
    /// 53000: the provider's rate limit (429) outlasted the retries.
    InsufficientResources,
    /// 58000: the provider failed (5xx) or answered with something unexpected.
    SystemError,
    /// 58P01: a file memori needs (the local model) is missing.
    UndefinedFile,
    /// 55000: an object is not in the state the call needs (e.g. read-only transaction).
    ObjectNotInPrerequisiteState,
    /// 54000: an input over a limit memori sets (memori.max_content_bytes).
    ProgramLimitExceeded,
}

impl Code {
    pub fn sqlstate(self) -> &'static str {
        match self {
            Code::InvalidParameterValue => "22023",
            Code::NullValueNotAllowed => "22004",
            Code::DataException => "22000",
            Code::ForeignKeyViolation => "23503",
            Code::UniqueViolation => "23505",
            Code::InvalidAuthorization => "28000",
            Code::InsufficientPrivilege => "42501",
            Code::ConnectionUnavailable => "08001",
            Code::ConnectionFailure => "08006",
            Code::InsufficientResources => "53000",
            Code::SystemError => "58000",
            Code::UndefinedFile => "58P01",
            Code::ObjectNotInPrerequisiteState => "55000",
            Code::ProgramLimitExceeded => "54000",
        }
    }

    fn pg(self) -> PgSqlErrorCode {
        use PgSqlErrorCode::*;
        match self {
            Code::InvalidParameterValue => ERRCODE_INVALID_PARAMETER_VALUE,
            Code::NullValueNotAllowed => ERRCODE_NULL_VALUE_NOT_ALLOWED,
            Code::DataException => ERRCODE_DATA_EXCEPTION,
            Code::ForeignKeyViolation => ERRCODE_FOREIGN_KEY_VIOLATION,
            Code::UniqueViolation => ERRCODE_UNIQUE_VIOLATION,
            Code::InvalidAuthorization => ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION,
            Code::InsufficientPrivilege => ERRCODE_INSUFFICIENT_PRIVILEGE,
            Code::ConnectionUnavailable => ERRCODE_SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION,
            Code::ConnectionFailure => ERRCODE_CONNECTION_FAILURE,
            Code::InsufficientResources => ERRCODE_INSUFFICIENT_RESOURCES,
            Code::SystemError => ERRCODE_SYSTEM_ERROR,
            Code::UndefinedFile => ERRCODE_UNDEFINED_FILE,
            Code::ObjectNotInPrerequisiteState => ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            Code::ProgramLimitExceeded => ERRCODE_PROGRAM_LIMIT_EXCEEDED,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct MemoriError {
    pub code: Code,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

pub type Result<T> = std::result::Result<T, MemoriError>;

/// What every memori message starts with, added once here.
const PREFIX: &str = "memori: ";

impl MemoriError {
    /// An error with `message`, which gets memori's prefix (`memori: `) if it lacks it.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        let message = message.into();
        MemoriError {
            code,
            message: if message.starts_with(PREFIX) {
                message
            } else {
                format!("{PREFIX}{message}")
            },
            detail: None,
            hint: None,
        }
    }
    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        MemoriError::new(Code::InvalidParameterValue, message)
    }

    /// Raises this error as a PostgreSQL ERROR; the current transaction is rolled back. The
    /// report's LOCATION is the caller's (through `or_raise`: where the SQL function gave up),
    /// not this file.
    #[track_caller]
    pub fn raise(self) -> ! {
        let mut report = ErrorReport::new(self.code.pg(), self.message, "memori");
        if let Some(d) = self.detail {
            report = report.set_detail(d);
        }
        if let Some(h) = self.hint {
            report = report.set_hint(h);
        }
        report.report(PgLogLevel::ERROR);
        unreachable!("ERROR does not return")
    }
}

impl fmt::Display for MemoriError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (SQLSTATE {})", self.message, self.code.sqlstate())
    }
}

impl std::error::Error for MemoriError {}

/// Unwraps a memori result or raises its error.
pub trait OrRaise<T> {
    #[track_caller]
    fn or_raise(self) -> T;
}

impl<T> OrRaise<T> for Result<T> {
    #[track_caller]
    fn or_raise(self) -> T {
        match self {
            Ok(v) => v,
            Err(e) => e.raise(),
        }
    }
}
