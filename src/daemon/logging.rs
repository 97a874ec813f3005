//! Logging for the daemon and the registry: human-readable lines on stderr by default; under
//! systemd (`JOURNAL_STREAM` names our stderr) lines start with a `<N>` syslog priority the
//! journal reads as the entry's level, and carry no timestamp of ours (the journal stamps each
//! entry); `log_format = "json"` writes one JSON object per line for log shippers. The filter
//! (`PILOT_LOG`, else `log_level`, else `info`) can be changed while running by [`set_filter`]
//! (a reload, SIGHUP).

use std::sync::OnceLock;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Layer, Registry};

use crate::config::LogFormat;

type FmtLayer = Box<dyn Layer<Registry> + Send + Sync>;
type FilterHandle =
    reload::Handle<EnvFilter, tracing_subscriber::layer::Layered<FmtLayer, Registry>>;

static FILTER: OnceLock<FilterHandle> = OnceLock::new();

/// The filter in force: `PILOT_LOG`, else the config's `log_level`, else `info`.
pub fn filter_for(log_level: Option<&str>) -> String {
    std::env::var("PILOT_LOG")
        .ok()
        .or_else(|| log_level.map(str::to_string))
        .unwrap_or_else(|| "info".into())
}

/// True when systemd connected our stderr to the journal (`JOURNAL_STREAM` is `DEV:INODE` of
/// the stream, see systemd.exec(5)).
pub fn stderr_is_journal() -> bool {
    let Ok(v) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = v.split_once(':') else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    // SAFETY: fstat writes into the zeroed struct we own; fd 2 may be closed (then it fails).
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::fstat(2, &mut st) } == 0;
    #[allow(clippy::unnecessary_cast)]
    let same = st.st_dev as u64 == dev && st.st_ino as u64 == ino;
    ok && same
}

/// Starts logging to stderr (once per process; later calls do nothing).
pub fn init(filter: &str, format: LogFormat) {
    let layer: FmtLayer = match format {
        LogFormat::Json => Box::new(
            tracing_subscriber::fmt::layer()
                .json()
                .with_writer(std::io::stderr),
        ),
        LogFormat::Text if stderr_is_journal() => Box::new(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .event_format(JournalFormat::default())
                .with_writer(std::io::stderr),
        ),
        LogFormat::Text => Box::new(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(std::io::stderr),
        ),
    };
    let (filter, handle) = reload::Layer::new(EnvFilter::new(filter));
    if tracing_subscriber::registry()
        .with(layer)
        .with(filter)
        .with(crate::daemon::health::ProblemLayer)
        .try_init()
        .is_ok()
    {
        let _ = FILTER.set(handle);
    }
}

/// Replaces the log filter of a running process (reload). An invalid filter is refused and the
/// old one stays.
pub fn set_filter(filter: &str) -> Result<(), String> {
    let parsed = EnvFilter::try_new(filter).map_err(|e| format!("log filter `{filter}`: {e}"))?;
    let handle = FILTER
        .get()
        .ok_or_else(|| "logging is not ours to change".to_string())?;
    handle.reload(parsed).map_err(|e| e.to_string())
}

/// The syslog priority the journal reads from a `<N>` prefix (sd-daemon(3)).
pub fn syslog_priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

/// A line for the journal: `<N>` then the usual text without our timestamp.
struct JournalFormat {
    inner: tracing_subscriber::fmt::format::Format<tracing_subscriber::fmt::format::Full, ()>,
}

impl Default for JournalFormat {
    fn default() -> Self {
        JournalFormat {
            inner: tracing_subscriber::fmt::format()
                .without_time()
                .with_ansi(false)
                .with_level(false),
        }
    }
}

impl<S, N> FormatEvent<S, N> for JournalFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        write!(writer, "<{}>", syslog_priority(event.metadata().level()))?;
        self.inner.format_event(ctx, writer, event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_map_to_the_syslog_priorities_the_journal_understands() {
        assert_eq!(syslog_priority(&Level::ERROR), 3);
        assert_eq!(syslog_priority(&Level::WARN), 4);
        assert_eq!(syslog_priority(&Level::INFO), 6);
        assert_eq!(syslog_priority(&Level::DEBUG), 7);
        assert_eq!(syslog_priority(&Level::TRACE), 7);
    }

    #[test]
    fn a_journal_stream_that_is_not_our_stderr_is_not_the_journal() {
        // The test harness's stderr is not 0:0 (no device and inode are both zero).
        std::env::set_var("JOURNAL_STREAM", "0:0");
        assert!(!stderr_is_journal());
        std::env::set_var("JOURNAL_STREAM", "garbage");
        assert!(!stderr_is_journal());
        std::env::remove_var("JOURNAL_STREAM");
        assert!(!stderr_is_journal());
    }
}
