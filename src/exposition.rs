//! The Prometheus text endpoint shared by the daemon and the registry: a [`Sheet`] turns
//! counters that already exist (read at scrape time, never on the hot path) into the text
//! exposition format with the prometheus-client crate, [`process_metrics`] adds the standard
//! `process_*` gauges, and [`serve`] answers `GET /metrics` on a TCP address (loopback by
//! convention: the endpoint has no authentication).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

pub use prometheus_client::registry::Unit as MetricUnit;

/// Label pairs of one sample.
pub type Labels = Vec<(String, String)>;

/// One scrape's worth of metrics, built fresh from snapshots.
pub struct Sheet {
    registry: Registry,
}

impl Default for Sheet {
    fn default() -> Self {
        Sheet::new()
    }
}

/// Label pairs from string slices.
pub fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

impl Sheet {
    /// An empty sheet.
    pub fn new() -> Sheet {
        Sheet {
            registry: Registry::default(),
        }
    }

    /// A counter family: `name` gets the unit and `_total` appended by the encoder.
    pub fn counters(
        &mut self,
        name: &str,
        help: &str,
        unit: Option<Unit>,
        samples: impl IntoIterator<Item = (Labels, u64)>,
    ) {
        let family = Family::<Labels, Counter>::default();
        for (l, v) in samples {
            family.get_or_create(&l).inc_by(v);
        }
        match unit {
            Some(u) => self.registry.register_with_unit(name, help, u, family),
            None => self.registry.register(name, help, family),
        }
    }

    /// One unlabelled counter.
    pub fn counter(&mut self, name: &str, help: &str, unit: Option<Unit>, value: u64) {
        self.counters(name, help, unit, [(Labels::new(), value)]);
    }

    /// A gauge family.
    pub fn gauges(
        &mut self,
        name: &str,
        help: &str,
        unit: Option<Unit>,
        samples: impl IntoIterator<Item = (Labels, i64)>,
    ) {
        let family = Family::<Labels, Gauge>::default();
        for (l, v) in samples {
            family.get_or_create(&l).set(v);
        }
        match unit {
            Some(u) => self.registry.register_with_unit(name, help, u, family),
            None => self.registry.register(name, help, family),
        }
    }

    /// One unlabelled gauge.
    pub fn gauge(&mut self, name: &str, help: &str, unit: Option<Unit>, value: i64) {
        self.gauges(name, help, unit, [(Labels::new(), value)]);
    }

    /// The text exposition format (ends with `# EOF`).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// The standard process gauges from /proc/self: CPU seconds, resident memory, threads, open
/// file descriptors, start time. Missing files (not Linux) add nothing.
pub fn process_metrics(sheet: &mut Sheet) {
    let ticks = clock_ticks();
    if let Some(stat) = read_stat() {
        // Fields after the command's closing parenthesis, 0-based from field 3 (state).
        let f: Vec<&str> = stat.split_whitespace().collect();
        let num = |i: usize| f.get(i).and_then(|s| s.parse::<u64>().ok());
        if let (Some(ut), Some(st)) = (num(11), num(12)) {
            sheet.counter(
                "process_cpu",
                "User and system CPU time spent.",
                Some(Unit::Seconds),
                (ut + st) / ticks.max(1),
            );
        }
        if let Some(t) = num(17) {
            sheet.gauge("process_threads", "OS threads.", None, t as i64);
        }
        if let (Some(start), Some(boot)) = (num(19), boot_time()) {
            sheet.gauge(
                "process_start_time",
                "Start time of the process since the unix epoch.",
                Some(Unit::Seconds),
                (boot + start / ticks.max(1)) as i64,
            );
        }
    }
    if let Some(pages) = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<i64>().ok())
    {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as i64;
        sheet.gauge(
            "process_resident_memory",
            "Resident memory size.",
            Some(Unit::Bytes),
            pages * page,
        );
    }
    if let Ok(d) = std::fs::read_dir("/proc/self/fd") {
        sheet.gauge(
            "process_open_fds",
            "Open file descriptors.",
            None,
            d.count() as i64,
        );
    }
}

fn read_stat() -> Option<String> {
    let s = std::fs::read_to_string("/proc/self/stat").ok()?;
    let i = s.rfind(')')?;
    Some(s[i + 1..].to_string())
}

fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(t).unwrap_or(100)
}

/// The boot time (unix seconds) from the wall clock and CLOCK_BOOTTIME, so it needs no
/// /proc/stat (hidden under systemd's `ProcSubset=pid`).
fn boot_time() -> Option<u64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    if unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) } != 0 {
        return None;
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs();
    now.checked_sub(u64::try_from(ts.tv_sec).ok()?)
}

/// Builds the text of one scrape.
pub type Render = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = String> + Send>> + Send + Sync>;

/// Binds `listen` and serves `GET /metrics` with what `render` builds; returns the bound
/// address (useful with port 0).
pub async fn serve(listen: SocketAddr, render: Render) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let render = render.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    render().await,
                )
            }
        }),
    );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(error = %e, "metrics endpoint stopped");
        }
    });
    tracing::info!(%addr, "metrics on http://{addr}/metrics");
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sheet_encodes_counters_with_units_and_total_and_labelled_gauges() {
        let mut s = Sheet::new();
        s.counter("pilot_rx", "Bytes received.", Some(Unit::Bytes), 42);
        s.gauges(
            "pilot_peers",
            "Peers by path.",
            None,
            [
                (labels(&[("path", "direct")]), 2),
                (labels(&[("path", "relay")]), 1),
            ],
        );
        process_metrics(&mut s);
        let text = s.encode();
        assert!(text.contains("pilot_rx_bytes_total 42"), "{text}");
        assert!(text.contains("pilot_peers{path=\"direct\"} 2"), "{text}");
        assert!(text.contains("process_resident_memory_bytes "), "{text}");
        assert!(text.contains("process_open_fds "), "{text}");
        let start: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix("process_start_time_seconds "))
            .and_then(|v| v.parse().ok())
            .expect("a start time");
        let now = crate::clock::unix_ms_now() / 1000;
        assert!(
            start <= now + 2 && start + 24 * 3600 > now,
            "{start} vs {now}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
