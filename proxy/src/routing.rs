//! The routing decision: a pure function from bucket, override, weight and health to a
//! backend. No Pingora types, so it is tested exhaustively.

/// One side of the migration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    Legacy,
    New,
}

impl Side {
    pub const BOTH: [Side; 2] = [Side::Legacy, Side::New];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Legacy => "legacy",
            Self::New => "new",
        }
    }

    pub fn other(self) -> Self {
        match self {
            Self::Legacy => Self::New,
            Self::New => Self::Legacy,
        }
    }

    pub fn index(self) -> usize {
        match self {
            Self::Legacy => 0,
            Self::New => 1,
        }
    }

    /// Parses an override header value (`new` or `legacy`, any case).
    pub fn parse(value: &[u8]) -> Option<Self> {
        if value.eq_ignore_ascii_case(b"new") {
            Some(Self::New)
        } else if value.eq_ignore_ascii_case(b"legacy") {
            Some(Self::Legacy)
        } else {
            None
        }
    }
}

/// Buckets run from 0 to `BUCKETS - 1`; a percentage is a number of buckets in hundredths.
pub const BUCKETS: u16 = 10_000;

#[derive(Debug, Clone, Copy)]
pub struct RouteInput {
    pub bucket: u16,
    /// `new_percent × 100`.
    pub new_basis_points: u32,
    pub forced: Option<Side>,
    pub legacy_up: bool,
    pub new_up: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// Where the request goes.
    pub side: Side,
    /// Where it would have gone with both backends up; differs from `side` on failover.
    pub preferred: Side,
}

impl Route {
    pub fn is_failover(&self) -> bool {
        self.side != self.preferred
    }
}

/// The side a bucket belongs to at this weight: buckets below `new_percent × 100` are new.
/// Raising the weight only moves legacy buckets to new; 0 and 100 are absolute.
pub fn preferred_side(bucket: u16, new_basis_points: u32) -> Side {
    if u32::from(bucket) < new_basis_points {
        Side::New
    } else {
        Side::Legacy
    }
}

/// Where a request goes, or `None` when both backends are down.
pub fn route(input: RouteInput) -> Option<Route> {
    let preferred = input
        .forced
        .unwrap_or_else(|| preferred_side(input.bucket, input.new_basis_points));
    let up = |side: Side| match side {
        Side::Legacy => input.legacy_up,
        Side::New => input.new_up,
    };
    [preferred, preferred.other()]
        .into_iter()
        .find(|side| up(*side))
        .map(|side| Route { side, preferred })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(bucket: u16, new_basis_points: u32) -> RouteInput {
        RouteInput {
            bucket,
            new_basis_points,
            forced: None,
            legacy_up: true,
            new_up: true,
        }
    }

    #[test]
    fn zero_and_one_hundred_percent_are_absolute() {
        for bucket in 0..BUCKETS {
            assert_eq!(route(input(bucket, 0)).unwrap().side, Side::Legacy);
            assert_eq!(route(input(bucket, 10_000)).unwrap().side, Side::New);
        }
    }

    #[test]
    fn the_share_of_new_buckets_is_exactly_the_weight() {
        for basis_points in [1, 10, 1_000, 3_333, 5_000, 9_999] {
            let new = (0..BUCKETS)
                .filter(|b| route(input(*b, basis_points)).unwrap().side == Side::New)
                .count();
            assert_eq!(new as u32, basis_points);
        }
    }

    #[test]
    fn raising_the_weight_never_moves_a_bucket_back_to_legacy() {
        for bucket in 0..BUCKETS {
            let mut was_new = false;
            for basis_points in (0..=10_000).step_by(250) {
                let is_new = preferred_side(bucket, basis_points) == Side::New;
                assert!(
                    is_new || !was_new,
                    "bucket {bucket} flipped back at {basis_points}"
                );
                was_new = is_new;
            }
        }
    }

    #[test]
    fn the_override_wins_over_the_bucket() {
        for forced in Side::BOTH {
            let mut with_override = input(0, 10_000);
            with_override.forced = Some(forced);
            assert_eq!(route(with_override).unwrap().side, forced);
        }
    }

    #[test]
    fn a_down_backend_fails_over_and_both_down_is_none() {
        for (legacy_up, new_up, preferred, expected) in [
            (true, true, Side::New, Some(Side::New)),
            (true, false, Side::New, Some(Side::Legacy)),
            (false, true, Side::Legacy, Some(Side::New)),
            (false, true, Side::New, Some(Side::New)),
            (false, false, Side::New, None),
            (false, false, Side::Legacy, None),
        ] {
            let decided = route(RouteInput {
                bucket: 0,
                new_basis_points: 0,
                forced: Some(preferred),
                legacy_up,
                new_up,
            });
            assert_eq!(decided.map(|r| r.side), expected);
            if let Some(r) = decided {
                assert_eq!(r.preferred, preferred);
                assert_eq!(r.is_failover(), r.side != preferred);
            }
        }
    }

    #[test]
    fn override_values_parse_in_any_case() {
        assert_eq!(Side::parse(b"NEW"), Some(Side::New));
        assert_eq!(Side::parse(b"legacy"), Some(Side::Legacy));
        assert_eq!(Side::parse(b"both"), None);
    }
}
