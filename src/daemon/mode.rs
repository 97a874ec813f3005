//! Which data-plane mode runs: TUN when this process may create a TUN device, the userspace
//! stack otherwise (or when asked), and why.

use crate::config::Mode;
use crate::error::{ErrorCode, PilotError};

/// The mode that runs, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModeChoice {
    /// `Tun` or `Userspace`, never `Auto`.
    pub mode: Mode,
    /// A sentence on why.
    pub reason: String,
}

/// Whether this process may create a TUN device, and if not, why.
pub fn tun_available() -> Result<(), String> {
    if !std::path::Path::new("/dev/net/tun").exists() {
        return Err("/dev/net/tun does not exist".into());
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let cap_eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    const CAP_NET_ADMIN: u64 = 12;
    if cap_eff & (1 << CAP_NET_ADMIN) == 0 {
        return Err("this process lacks CAP_NET_ADMIN".into());
    }
    Ok(())
}

/// Resolves `auto` and checks that a forced `tun` is possible.
pub fn choose_mode(requested: Mode) -> Result<ModeChoice, PilotError> {
    decide(requested, tun_available())
}

/// The rule of [`choose_mode`], given whether TUN is available.
fn decide(requested: Mode, tun: Result<(), String>) -> Result<ModeChoice, PilotError> {
    match (requested, tun) {
        (Mode::Userspace, _) => Ok(ModeChoice {
            mode: Mode::Userspace,
            reason: "userspace mode was requested".into(),
        }),
        (Mode::Tun, Ok(())) => Ok(ModeChoice {
            mode: Mode::Tun,
            reason: "tun mode was requested".into(),
        }),
        (Mode::Tun, Err(why)) => Err(PilotError::new(
            ErrorCode::Unauthorized,
            format!("tun mode is not possible: {why}"),
            "run as root (or grant CAP_NET_ADMIN), or use --mode userspace",
        )),
        (Mode::Auto, Ok(())) => Ok(ModeChoice {
            mode: Mode::Tun,
            reason: "auto: /dev/net/tun and CAP_NET_ADMIN are available".into(),
        }),
        (Mode::Auto, Err(why)) => Ok(ModeChoice {
            mode: Mode::Userspace,
            reason: format!("auto: {why}, so the userspace stack runs"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_falls_back_to_userspace_and_says_why() {
        let c = decide(Mode::Auto, Err("no tun".into())).unwrap();
        assert_eq!(c.mode, Mode::Userspace);
        assert!(c.reason.contains("no tun"));
        assert_eq!(decide(Mode::Auto, Ok(())).unwrap().mode, Mode::Tun);
    }

    #[test]
    fn forced_tun_fails_clearly_when_impossible() {
        let e = decide(Mode::Tun, Err("this process lacks CAP_NET_ADMIN".into())).unwrap_err();
        assert_eq!(e.code, ErrorCode::Unauthorized);
        assert!(e.message.contains("CAP_NET_ADMIN"));
        assert_eq!(
            decide(Mode::Userspace, Ok(())).unwrap().mode,
            Mode::Userspace
        );
    }
}
