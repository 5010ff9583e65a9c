//! The single-VM stop policies by name: the one list that the C API, the command line and
//! the simulator take their names, order and defaults from.

use core::ffi::CStr;

use super::{
    Decision, DowntimeLimit, IterationReport, SmartStop, StopPolicy, XenClassic, XenToday,
    DEFAULT_WINDOW,
};

/// Declares [`PolicyKind`] and its name table from one list.
macro_rules! policy_kinds {
    ($($(#[$doc:meta])* $variant:ident = $name:literal,)+) => {
        /// A single-VM stop policy, by kind.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
        #[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
        #[cfg_attr(feature = "serde", serde(rename_all = "kebab-case"))]
        pub enum PolicyKind {
            $($(#[$doc])* $variant,)+
        }

        impl PolicyKind {
            /// Every policy, in report order (the oldest rule first).
            pub const ALL: [PolicyKind; [$($name),+].len()] = [$(PolicyKind::$variant,)+];

            /// Its name in reports and on command lines, as a C string (for the C API).
            pub const fn c_name(self) -> &'static CStr {
                match self {
                    $(PolicyKind::$variant => $name,)+
                }
            }
        }
    };
}

policy_kinds! {
    /// Xen's classic rule: 30 iterations, 3x memory sent, or fewer than 50 pages left.
    XenClassic = c"xen-classic",
    /// Xen today: 5 iterations or fewer than 50 pages left.
    XenToday = c"xen-today",
    /// QEMU-style: what is left fits the downtime limit at the measured bandwidth.
    DowntimeLimit = c"downtime-limit",
    /// CloudNet's Smart Stop (the default).
    #[default]
    SmartStop = c"smart-stop",
}

impl PolicyKind {
    /// Its name in reports and on command lines ("smart-stop", ...).
    pub fn name(self) -> &'static str {
        // every name above is ASCII
        self.c_name().to_str().unwrap_or("")
    }

    /// The policy called `name`, if any.
    pub fn from_name(name: &str) -> Option<PolicyKind> {
        Self::ALL.iter().copied().find(|k| k.name() == name)
    }

    /// A fresh policy of this kind for a VM described by `params`.
    pub fn build(self, params: &PolicyParams) -> AnyPolicy {
        match self {
            PolicyKind::XenClassic => AnyPolicy::XenClassic(XenClassic::new(params.vm_pages)),
            PolicyKind::XenToday => AnyPolicy::XenToday(XenToday::default()),
            PolicyKind::DowntimeLimit => {
                let mut p = DowntimeLimit::new(params.page_size);
                p.limit_us = params.downtime_limit_us;
                AnyPolicy::DowntimeLimit(p)
            }
            PolicyKind::SmartStop => AnyPolicy::SmartStop(SmartStop::new(params.smart_window)),
        }
    }
}

/// What the policies need to know about the VM, and their tunables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicyParams {
    /// Guest memory in pages (Xen classic's 3x budget).
    pub vm_pages: u64,
    /// Page size in bytes (the downtime limit's estimate before anything was measured).
    pub page_size: u64,
    /// Smart Stop's window, 1 to 16.
    pub smart_window: usize,
    /// The downtime-limit policy's limit, in microseconds.
    pub downtime_limit_us: u64,
}

impl PolicyParams {
    /// The defaults for a VM of `vm_pages` pages of `page_size` bytes: Smart Stop's window
    /// of [`DEFAULT_WINDOW`], a 300 ms downtime limit.
    pub const fn new(vm_pages: u64, page_size: u64) -> Self {
        PolicyParams {
            vm_pages,
            page_size,
            smart_window: DEFAULT_WINDOW,
            downtime_limit_us: DowntimeLimit::new(0).limit_us,
        }
    }
}

/// Any one of the single-VM policies, with its state: a fixed-size value (no allocation)
/// that a C struct or a firmware static can hold.
#[derive(Debug, Clone)]
pub enum AnyPolicy {
    XenClassic(XenClassic),
    XenToday(XenToday),
    DowntimeLimit(DowntimeLimit),
    SmartStop(SmartStop),
}

impl AnyPolicy {
    /// Which policy this is.
    pub fn kind(&self) -> PolicyKind {
        match self {
            AnyPolicy::XenClassic(_) => PolicyKind::XenClassic,
            AnyPolicy::XenToday(_) => PolicyKind::XenToday,
            AnyPolicy::DowntimeLimit(_) => PolicyKind::DowntimeLimit,
            AnyPolicy::SmartStop(_) => PolicyKind::SmartStop,
        }
    }

    /// The hard cap on iterations: the policy stops at this iteration whatever it saw.
    pub fn max_iterations(&self) -> u32 {
        match self {
            AnyPolicy::XenClassic(p) => p.max_iterations,
            AnyPolicy::XenToday(p) => p.max_iterations,
            AnyPolicy::DowntimeLimit(p) => p.ceiling,
            AnyPolicy::SmartStop(p) => p.ceiling,
        }
    }

    /// Changes the hard cap on iterations (30 by default, 5 for Xen today).
    pub fn set_max_iterations(&mut self, max_iterations: u32) {
        match self {
            AnyPolicy::XenClassic(p) => p.max_iterations = max_iterations,
            AnyPolicy::XenToday(p) => p.max_iterations = max_iterations,
            AnyPolicy::DowntimeLimit(p) => p.ceiling = max_iterations,
            AnyPolicy::SmartStop(p) => p.ceiling = max_iterations,
        }
    }

    fn inner(&mut self) -> &mut dyn StopPolicy {
        match self {
            AnyPolicy::XenClassic(p) => p,
            AnyPolicy::XenToday(p) => p,
            AnyPolicy::DowntimeLimit(p) => p,
            AnyPolicy::SmartStop(p) => p,
        }
    }
}

impl StopPolicy for AnyPolicy {
    fn decide(&mut self, report: &IterationReport) -> Decision {
        self.inner().decide(report)
    }

    fn name(&self) -> &'static str {
        self.kind().name()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_match_each_policy() {
        let params = PolicyParams::new(1000, 4096);
        for k in PolicyKind::ALL {
            assert_eq!(PolicyKind::from_name(k.name()), Some(k));
            let mut p = k.build(&params);
            assert_eq!(p.kind(), k);
            assert_eq!(p.name(), k.name());
            assert_eq!(p.inner().name(), k.name(), "the policy's own name");
        }
        assert_eq!(PolicyKind::from_name("never"), None);
        assert_eq!(PolicyKind::default(), PolicyKind::SmartStop);
        assert_eq!(PolicyKind::ALL.len(), 4);
    }

    #[test]
    fn params_reach_the_policies() {
        let params = PolicyParams {
            smart_window: 7,
            downtime_limit_us: 1234,
            ..PolicyParams::new(10, 4096)
        };
        match PolicyKind::SmartStop.build(&params) {
            AnyPolicy::SmartStop(p) => assert_eq!(p.window, 7),
            other => panic!("{other:?}"),
        }
        match PolicyKind::DowntimeLimit.build(&params) {
            AnyPolicy::DowntimeLimit(p) => assert_eq!((p.limit_us, p.page_size), (1234, 4096)),
            other => panic!("{other:?}"),
        }
        let mut p = PolicyKind::XenToday.build(&params);
        p.set_max_iterations(2);
        assert_eq!(p.max_iterations(), 2);
        let r = IterationReport {
            iteration: 2,
            pages_sent: 1000,
            pages_remaining: 1000,
            ..Default::default()
        };
        assert_eq!(p.decide(&r), Decision::StopAndCopy);
    }
}
