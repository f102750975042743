//! The route table: per app and environment, a match (host, path prefix), the stable and canary
//! upstream sets and the canary weight. Readers take a snapshot without locking (`ArcSwap`);
//! updates rebuild the table and swap it in. Upstreams (and their health) outlive updates.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering},
    },
};

use arc_swap::ArcSwap;
use rp_proto::events::v1 as ev;

use crate::stats::VersionStats;

/// One upstream address and what is known of its health.
#[derive(Debug)]
pub struct Upstream {
    pub address: String,
    /// `address` parsed once, for request URIs (None when it is no valid authority).
    pub authority: Option<http::uri::Authority>,
    pub weight: u32,
    /// Active checks: false after `unhealthy_threshold` consecutive failures.
    pub healthy: AtomicBool,
    pub check_failures: AtomicU32,
    pub check_successes: AtomicU32,
    /// Passive detection: consecutive failed requests, and the ejection deadline (Unix ms).
    pub request_failures: AtomicU32,
    pub ejected_until_ms: AtomicU64,
    pub in_flight: AtomicUsize,
}

impl Upstream {
    fn new(spec: &str) -> Self {
        let (address, weight) = match spec.split_once('*') {
            Some((address, weight)) => (address.trim().to_owned(), weight.trim().parse().unwrap_or(1).max(1)),
            None => (spec.trim().to_owned(), 1),
        };
        Self {
            authority: address.parse().ok(),
            address,
            weight,
            healthy: AtomicBool::new(true),
            check_failures: AtomicU32::new(0),
            check_successes: AtomicU32::new(0),
            request_failures: AtomicU32::new(0),
            ejected_until_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
        }
    }

    pub fn available(&self, now_ms: u64) -> bool {
        self.healthy.load(Ordering::Relaxed) && self.ejected_until_ms.load(Ordering::Relaxed) <= now_ms
    }
}

/// How a pool picks among its available upstreams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balancing {
    RoundRobin,
    LeastConnections,
    Weighted,
}

impl Balancing {
    pub fn parse(text: &str) -> Self {
        match text {
            "least_connections" => Balancing::LeastConnections,
            "weighted" => Balancing::Weighted,
            _ => Balancing::RoundRobin,
        }
    }
}

/// The upstreams of one version.
#[derive(Debug)]
pub struct Pool {
    pub version: String,
    /// `version` as the response header value, made once.
    pub version_header: Option<http::HeaderValue>,
    pub upstreams: Vec<Arc<Upstream>>,
    next: AtomicUsize,
    pub stats: Arc<VersionStats>,
}

impl Pool {
    /// An available upstream, or `None` when all are out. Allocation-free: it runs on every
    /// proxied request.
    pub fn pick(&self, balancing: Balancing, now_ms: u64) -> Option<Arc<Upstream>> {
        let available = || self.upstreams.iter().filter(move |u| u.available(now_ms));
        let count = available().count();
        if count == 0 {
            return None;
        }
        let chosen = match balancing {
            Balancing::RoundRobin => available().nth(self.next.fetch_add(1, Ordering::Relaxed) % count),
            Balancing::LeastConnections => {
                // Ties rotate so equal upstreams share the load.
                let start = self.next.fetch_add(1, Ordering::Relaxed) % count;
                available()
                    .skip(start)
                    .chain(available().take(start))
                    .min_by_key(|u| u.in_flight.load(Ordering::Relaxed))
            }
            Balancing::Weighted => {
                let total: u32 = available().map(|u| u.weight).sum();
                let mut point = rand::random::<u32>() % total.max(1);
                available().find(|u| {
                    if point < u.weight {
                        true
                    } else {
                        point -= u.weight;
                        false
                    }
                })
            }
        };
        chosen.cloned()
    }

    pub fn has_available(&self, now_ms: u64) -> bool {
        self.upstreams.iter().any(|u| u.available(now_ms))
    }
}

/// One app's route in one environment.
#[derive(Debug)]
pub struct Route {
    pub app: String,
    pub environment: String,
    pub host: String,
    pub path_prefix: String,
    pub stable: Option<Arc<Pool>>,
    pub canary: Option<Arc<Pool>>,
    /// Percent of requests to the canary.
    pub canary_weight: u32,
    pub deployment_id: String,
    pub revision: i64,
    /// `<router.sticky_cookie>_<app>`, and the `Set-Cookie` values pinning a client to each
    /// track, made once per table rather than on every request.
    pub sticky_cookie: String,
    pub set_cookie_stable: http::HeaderValue,
    pub set_cookie_canary: http::HeaderValue,
}

/// The `Set-Cookie` value that pins a client to `track` for an hour.
fn set_cookie(name: &str, track: &str) -> http::HeaderValue {
    http::HeaderValue::from_str(&format!("{name}={track}; Path=/; Max-Age=3600; HttpOnly; SameSite=Lax"))
        .unwrap_or_else(|_| http::HeaderValue::from_static(""))
}

/// The table routers read on every request.
#[derive(Debug, Default)]
pub struct Table {
    /// Most specific first: host-bound before host-less, longer prefixes before shorter.
    pub routes: Vec<Arc<Route>>,
}

impl Table {
    /// The route for a request.
    pub fn find(&self, host: &str, path: &str) -> Option<&Arc<Route>> {
        let host = host.split(':').next().unwrap_or(host);
        self.routes.iter().find(|r| {
            (r.host.is_empty() || r.host.eq_ignore_ascii_case(host)) && path.starts_with(&r.path_prefix)
        })
    }
}

/// Holds the table and everything that must survive a rebuild.
pub struct Routes {
    /// Prefix of the per-app sticky cookie (`router.sticky_cookie`).
    cookie_prefix: String,
    table: ArcSwap<Table>,
    /// Last update per app/environment, from which tables are rebuilt.
    updates: Mutex<HashMap<(String, String), ev::RouteUpdated>>,
    upstreams: Mutex<HashMap<String, Arc<Upstream>>>,
    stats: Mutex<HashMap<(String, String, String), Arc<VersionStats>>>,
    /// Statistics of versions that left every route, with counts not yet sent: the publisher
    /// sends them once and drops them, so a version that comes back starts from zero.
    retired: Mutex<Vec<Arc<VersionStats>>>,
}

impl Default for Routes {
    fn default() -> Self {
        Self::new("rp_track")
    }
}

impl Routes {
    pub fn new(cookie_prefix: &str) -> Self {
        Self {
            cookie_prefix: cookie_prefix.to_owned(),
            table: ArcSwap::from_pointee(Table::default()),
            updates: Mutex::new(HashMap::new()),
            upstreams: Mutex::new(HashMap::new()),
            stats: Mutex::new(HashMap::new()),
            retired: Mutex::new(Vec::new()),
        }
    }

    pub fn snapshot(&self) -> Arc<Table> {
        self.table.load_full()
    }

    /// Applies an update unless a newer one for the same route was applied already. Returns
    /// whether the table changed.
    pub fn apply(&self, update: ev::RouteUpdated) -> bool {
        let key = (update.app.clone(), update.environment.clone());
        {
            let mut updates = self.updates.lock().expect("routes lock");
            if updates.get(&key).is_some_and(|current| current.revision >= update.revision) {
                return false;
            }
            updates.insert(key, update);
        }
        self.rebuild();
        true
    }

    fn rebuild(&self) {
        let updates = self.updates.lock().expect("routes lock").clone();
        let mut upstreams = self.upstreams.lock().expect("routes lock");
        let mut stats = self.stats.lock().expect("routes lock");
        let mut routes: Vec<Arc<Route>> = updates
            .values()
            .map(|update| {
                let mut pool = |version: &str| -> Option<Arc<Pool>> {
                    if version.is_empty() {
                        return None;
                    }
                    let backend = update.backends.iter().find(|b| b.version == version)?;
                    let members = backend
                        .addresses
                        .iter()
                        .map(|spec| {
                            upstreams
                                .entry(spec.clone())
                                .or_insert_with(|| Arc::new(Upstream::new(spec)))
                                .clone()
                        })
                        .collect();
                    let key = (update.app.clone(), update.environment.clone(), version.to_owned());
                    let version_stats = stats
                        .entry(key)
                        .or_insert_with(|| {
                            Arc::new(VersionStats::new(&update.app, &update.environment, version))
                        })
                        .clone();
                    Some(Arc::new(Pool {
                        version: version.to_owned(),
                        version_header: http::HeaderValue::from_str(version).ok(),
                        upstreams: members,
                        next: AtomicUsize::new(0),
                        stats: version_stats,
                    }))
                };
                let canary = pool(&update.canary_version);
                let stable = if update.stable_version == update.canary_version {
                    None
                } else {
                    pool(&update.stable_version)
                };
                let matching = update.r#match.clone().unwrap_or_default();
                let sticky_cookie = format!("{}_{}", self.cookie_prefix, update.app);
                Arc::new(Route {
                    set_cookie_stable: set_cookie(&sticky_cookie, "stable"),
                    set_cookie_canary: set_cookie(&sticky_cookie, "canary"),
                    sticky_cookie,
                    app: update.app.clone(),
                    environment: update.environment.clone(),
                    host: matching.host,
                    path_prefix: if matching.path_prefix.is_empty() {
                        "/".into()
                    } else {
                        matching.path_prefix
                    },
                    canary_weight: update.canary_weight.clamp(0, 100) as u32,
                    stable,
                    canary,
                    deployment_id: update.deployment_id.clone(),
                    revision: update.revision,
                })
            })
            .collect();
        routes.sort_by(|a, b| {
            b.host
                .is_empty()
                .cmp(&a.host.is_empty())
                .reverse()
                .then(b.path_prefix.len().cmp(&a.path_prefix.len()))
        });
        // Forget upstreams and statistics no route uses any more.
        let used: std::collections::HashSet<String> =
            updates.values().flat_map(|u| u.backends.iter().flat_map(|b| b.addresses.clone())).collect();
        upstreams.retain(|address, _| used.contains(address));
        let in_use: std::collections::HashSet<(String, String, String)> = routes
            .iter()
            .flat_map(|route| {
                [&route.canary, &route.stable]
                    .into_iter()
                    .flatten()
                    .map(|pool| (route.app.clone(), route.environment.clone(), pool.version.clone()))
            })
            .collect();
        let mut retired = self.retired.lock().expect("routes lock");
        stats.retain(|key, version_stats| {
            let keep = in_use.contains(key);
            if !keep {
                retired.push(version_stats.clone());
            }
            keep
        });
        self.table.store(Arc::new(Table { routes }));
    }

    /// Statistics of versions no route serves any more (each returned once).
    pub fn take_retired(&self) -> Vec<Arc<VersionStats>> {
        std::mem::take(&mut *self.retired.lock().expect("routes lock"))
    }

    /// Every upstream in use (for health checks).
    pub fn upstreams(&self) -> Vec<Arc<Upstream>> {
        self.upstreams.lock().expect("routes lock").values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(
        app: &str,
        host: &str,
        prefix: &str,
        canary: (&str, &[&str]),
        stable: Option<(&str, &[&str])>,
        weight: i32,
        revision: i64,
    ) -> ev::RouteUpdated {
        let mut backends = vec![ev::RouteBackend {
            version: canary.0.into(),
            addresses: canary.1.iter().map(|s| s.to_string()).collect(),
        }];
        if let Some((version, addresses)) = stable {
            backends.push(ev::RouteBackend {
                version: version.into(),
                addresses: addresses.iter().map(|s| s.to_string()).collect(),
            });
        }
        ev::RouteUpdated {
            app: app.into(),
            environment: "prod".into(),
            r#match: Some(ev::RouteMatch { host: host.into(), path_prefix: prefix.into() }),
            backends,
            stable_version: stable.map(|s| s.0.to_owned()).unwrap_or_default(),
            canary_version: canary.0.into(),
            canary_weight: weight,
            deployment_id: "d".into(),
            revision,
        }
    }

    #[test]
    fn the_most_specific_route_wins_and_old_revisions_are_ignored() {
        let routes = Routes::default();
        assert!(routes.apply(update(
            "web",
            "",
            "/",
            ("2", &["10.0.0.2:80"]),
            Some(("1", &["10.0.0.1:80"])),
            10,
            5
        )));
        assert!(routes.apply(update("api", "", "/api", ("1", &["10.0.1.1:80"]), None, 100, 1)));
        assert!(routes.apply(update("shop", "shop.example.com", "/", ("1", &["10.0.2.1:80"]), None, 100, 1)));
        let table = routes.snapshot();
        assert_eq!(table.find("shop.example.com:8000", "/api/x").unwrap().app, "shop", "host-bound first");
        assert_eq!(table.find("other", "/api/x").unwrap().app, "api", "longer prefix next");
        assert_eq!(table.find("other", "/").unwrap().app, "web");
        assert!(
            !routes.apply(update("web", "", "/", ("3", &["10.0.0.3:80"]), None, 100, 4)),
            "older revision"
        );
        assert_eq!(routes.snapshot().find("x", "/").unwrap().canary_weight, 10);
        assert!(routes.apply(update(
            "web",
            "",
            "/",
            ("2", &["10.0.0.2:80"]),
            Some(("1", &["10.0.0.1:80"])),
            0,
            6
        )));
        assert_eq!(routes.snapshot().find("x", "/").unwrap().canary_weight, 0);
    }

    #[test]
    fn a_version_leaving_its_route_hands_over_its_last_counts_once_and_comes_back_fresh() {
        let routes = Routes::default();
        let canary = |weight, revision| {
            update("web", "", "/", ("2", &["10.0.0.2:80"]), Some(("1", &["10.0.0.1:80"])), weight, revision)
        };
        routes.apply(canary(10, 1));
        let v2 = routes.snapshot().routes[0].canary.clone().unwrap();
        v2.stats.record(500, std::time::Duration::from_millis(3));
        v2.stats.record(200, std::time::Duration::from_millis(3));
        // Rolled back: only 1 serves.
        routes.apply(update("web", "", "/", ("1", &["10.0.0.1:80"]), None, 100, 2));
        let retired = routes.take_retired();
        assert_eq!(retired.len(), 1);
        assert_eq!(retired[0].version, "2");
        assert_eq!(retired[0].take().0, 2);
        assert!(routes.take_retired().is_empty(), "handed over once");
        routes.apply(canary(10, 3));
        let again = routes.snapshot().routes[0].canary.clone().unwrap();
        assert_eq!(again.stats.take().0, 0, "the version comes back without its old counts");
    }

    #[test]
    fn pools_skip_unavailable_upstreams_and_balance() {
        let routes = Routes::default();
        routes.apply(update("web", "", "/", ("1", &["10.0.0.1:80", "10.0.0.2:80*3"]), None, 100, 1));
        let table = routes.snapshot();
        let pool = table.routes[0].canary.clone().unwrap();
        let mut seen = HashMap::new();
        for _ in 0..8 {
            *seen.entry(pool.pick(Balancing::RoundRobin, 0).unwrap().address.clone()).or_insert(0) += 1;
        }
        assert_eq!(seen.values().copied().collect::<Vec<_>>(), [4, 4]);
        let weighted =
            (0..4000).filter(|_| pool.pick(Balancing::Weighted, 0).unwrap().address == "10.0.0.2:80").count();
        assert!((2700..3300).contains(&weighted), "weight 3 of 4: {weighted}");
        pool.upstreams[0].in_flight.store(5, Ordering::Relaxed);
        assert_eq!(pool.pick(Balancing::LeastConnections, 0).unwrap().address, "10.0.0.2:80");
        pool.upstreams[1].healthy.store(false, Ordering::Relaxed);
        assert_eq!(pool.pick(Balancing::RoundRobin, 0).unwrap().address, "10.0.0.1:80");
        pool.upstreams[0].ejected_until_ms.store(1000, Ordering::Relaxed);
        assert!(pool.pick(Balancing::RoundRobin, 999).is_none());
        assert!(pool.pick(Balancing::RoundRobin, 1000).is_some());
    }
}
