//! Raw paths → route templates, so a metric has one series per route rather
//! than per user id: `/users/123` → `/users/{id}`; UUIDs, hex ids and long
//! tokens alike. kscope sees the wire, not the application's router, so the
//! template is a heuristic; each service gets at most `cap` distinct routes
//! and the rest share [`semconv::OTHER`](super::semconv::OTHER).

use std::collections::{HashMap, HashSet};

use super::semconv::OTHER;

/// The placeholder for an id-like path segment.
pub const ID: &str = "{id}";

/// The template of `path` (query and fragment dropped).
pub fn template(path: &str) -> String {
    let path = path.split(['?', '#']).next().unwrap_or("");
    if path.is_empty() {
        return "/".to_owned();
    }
    if !path.starts_with('/') {
        // "*" (OPTIONS), an absolute-form proxy target, or gRPC's already
        // low-cardinality "service/method".
        return if path == "*" { "*".to_owned() } else { OTHER.to_owned() };
    }
    let mut out = String::with_capacity(path.len());
    for segment in path.split('/').skip(1) {
        out.push('/');
        out.push_str(if is_id(segment) { ID } else { segment });
    }
    out
}

fn is_id(segment: &str) -> bool {
    let bytes = segment.as_bytes();
    if bytes.is_empty() {
        return false;
    }
    let digits = bytes.iter().filter(|b| b.is_ascii_digit()).count();
    if digits == bytes.len() {
        return true;
    }
    let hex = bytes.iter().all(u8::is_ascii_hexdigit);
    // A UUID: 8-4-4-4-12 hex digits.
    let uuid = bytes.len() == 36
        && bytes
            .iter()
            .enumerate()
            .all(|(i, b)| if [8, 13, 18, 23].contains(&i) { *b == b'-' } else { b.is_ascii_hexdigit() });
    // Hex ids (object ids, hashes) with at least one digit, so words such as
    // "facade" or "added" stay.
    let hex_id = hex && bytes.len() >= 8 && digits > 0;
    // Long tokens mixing letters and digits (base64 ids, session keys).
    let token = bytes.len() >= 16
        && digits >= 2
        && bytes.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'=' | b'.'));
    uuid || hex_id || token
}

/// Bounds the routes each service reports.
#[derive(Debug)]
pub struct RouteTable {
    cap: usize,
    /// Services tracked at most; beyond, routes are not bounded per service
    /// but every route is [`OTHER`].
    max_services: usize,
    seen: HashMap<String, HashSet<String>>,
    pub overflowed: u64,
}

impl RouteTable {
    pub fn new(cap: usize, max_services: usize) -> Self {
        Self { cap, max_services, seen: HashMap::new(), overflowed: 0 }
    }

    /// The route `path` is reported under for `service`.
    pub fn route(&mut self, service: &str, path: &str) -> String {
        let route = template(path);
        if self.seen.len() >= self.max_services && !self.seen.contains_key(service) {
            self.overflowed += 1;
            return OTHER.to_owned();
        }
        if !self.seen.contains_key(service) {
            self.seen.insert(service.to_owned(), HashSet::new());
        }
        let Some(routes) = self.seen.get_mut(service) else { return OTHER.to_owned() };
        if routes.contains(&route) {
            return route;
        }
        if routes.len() >= self.cap {
            self.overflowed += 1;
            return OTHER.to_owned();
        }
        routes.insert(route.clone());
        route
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_become_placeholders() {
        for (path, want) in [
            ("/users/123", "/users/{id}"),
            ("/users/123/orders/9?expand=1", "/users/{id}/orders/{id}"),
            ("/o/550e8400-e29b-41d4-a716-446655440000", "/o/{id}"),
            ("/blobs/5f2b9c1e0a7d", "/blobs/{id}"),
            ("/s/aZ3kLm9QpR2sT7uV", "/s/{id}"),
            ("/api/v1/facade/added", "/api/v1/facade/added"),
            ("/static/app.js", "/static/app.js"),
            ("/", "/"),
            ("", "/"),
            ("/a//b/", "/a//b/"),
            ("*", "*"),
            ("http://example.com/x", OTHER),
        ] {
            assert_eq!(template(path), want, "{path}");
        }
    }

    #[test]
    fn each_service_gets_at_most_cap_routes() {
        let mut table = RouteTable::new(2, 8);
        assert_eq!(table.route("shop", "/a"), "/a");
        assert_eq!(table.route("shop", "/b/1"), "/b/{id}");
        assert_eq!(table.route("shop", "/b/2"), "/b/{id}");
        assert_eq!(table.route("shop", "/c"), OTHER);
        assert_eq!(table.route("cart", "/c"), "/c");
        assert_eq!(table.route("shop", "/a"), "/a");
        assert_eq!(table.overflowed, 1);
    }

    #[test]
    fn services_beyond_the_bound_share_one_route() {
        let mut table = RouteTable::new(10, 1);
        assert_eq!(table.route("one", "/x"), "/x");
        assert_eq!(table.route("two", "/x"), OTHER);
        assert_eq!(table.overflowed, 1);
    }
}
