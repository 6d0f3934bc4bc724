//! Error messages with their causes, for errors that cross into reports and paperwork.

/// An error with its causes: reqwest's top-level message ("error decoding response body") rarely
/// says what went wrong.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}
