//! Whether an S3 bucket's CORS rules let web pages of the configured origins
//! (`media.cors_origins`) play what the node publishes there, as `/media`
//! lets them on the embedded default: `GET` and `HEAD`, the `Range` header
//! (players fetch byte ranges of MP4s), and `Content-Length`, `Content-Range`
//! and `Accept-Ranges` exposed to scripts.
//!
//! The rules are matched as S3 matches them: for each request, the first rule
//! whose origin, method and requested headers all match answers it, and only
//! that rule's exposed headers count. Written here rather than taken from a
//! crate: no crate evaluates S3 CORS rules, and the matching is a few lines.

use crate::config::CorsOrigins;

/// One rule of a bucket's CORS configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CorsRule {
    pub allowed_origins: Vec<String>,
    pub allowed_methods: Vec<String>,
    pub allowed_headers: Vec<String>,
    pub expose_headers: Vec<String>,
}

/// The request headers players send cross-origin.
const REQUEST_HEADERS: &[&str] = &["Range"];
/// The response headers players read.
pub const EXPOSED: &[&str] = &["Content-Length", "Content-Range", "Accept-Ranges"];

/// What keeps the configured origins from playing, one line per problem;
/// empty when they all can. `rules` is `None` when the bucket has no CORS
/// configuration at all.
pub fn problems(rules: Option<&[CorsRule]>, origins: &CorsOrigins) -> Vec<String> {
    let Some(rules) = rules.filter(|r| !r.is_empty()) else {
        return vec!["the bucket has no CORS rules: browsers on other origins cannot play".into()];
    };
    let origins: Vec<&str> = match origins {
        // Any origin may play only if the bucket says `*` too.
        CorsOrigins::Any => vec!["*"],
        CorsOrigins::List(list) => list.iter().map(String::as_str).collect(),
    };
    let mut out = Vec::new();
    for origin in origins {
        for method in ["GET", "HEAD"] {
            let Some(rule) = rules.iter().find(|r| r.answers(origin, method)) else {
                out.push(format!(
                    "no rule allows {method} with a Range header from `{origin}`"
                ));
                continue;
            };
            if method == "GET" {
                let hidden: Vec<&str> = EXPOSED
                    .iter()
                    .copied()
                    .filter(|h| !contains_ignore_case(&rule.expose_headers, h))
                    .collect();
                if !hidden.is_empty() {
                    out.push(format!(
                        "the rule for `{origin}` does not expose {}",
                        hidden.join(", ")
                    ));
                }
            }
        }
    }
    out
}

impl CorsRule {
    fn answers(&self, origin: &str, method: &str) -> bool {
        self.allowed_origins
            .iter()
            .any(|o| wildcard_match(o, origin))
            && self
                .allowed_methods
                .iter()
                .any(|m| m.eq_ignore_ascii_case(method))
            && REQUEST_HEADERS.iter().all(|h| {
                self.allowed_headers
                    .iter()
                    .any(|a| wildcard_match(&a.to_ascii_lowercase(), &h.to_ascii_lowercase()))
            })
    }
}

/// S3 patterns hold at most one `*`, which matches any run of characters.
/// A configured `*` (any origin) is matched only by a pattern that is `*`.
fn wildcard_match(pattern: &str, value: &str) -> bool {
    if value == "*" {
        return pattern == "*";
    }
    match pattern.split_once('*') {
        None => pattern == value,
        Some((head, tail)) => {
            value.len() >= head.len() + tail.len()
                && value.starts_with(head)
                && value.ends_with(tail)
        }
    }
}

fn contains_ignore_case(list: &[String], item: &str) -> bool {
    list.iter().any(|x| x.eq_ignore_ascii_case(item))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(origins: &[&str], methods: &[&str], headers: &[&str], expose: &[&str]) -> CorsRule {
        let v = |items: &[&str]| items.iter().map(|s| s.to_string()).collect();
        CorsRule {
            allowed_origins: v(origins),
            allowed_methods: v(methods),
            allowed_headers: v(headers),
            expose_headers: v(expose),
        }
    }

    fn list(origins: &[&str]) -> CorsOrigins {
        CorsOrigins::List(origins.iter().map(|s| s.to_string()).collect())
    }

    /// The rule docs/fleet.md tells operators to set.
    fn documented() -> CorsRule {
        rule(
            &["*"],
            &["GET", "HEAD"],
            &["Range", "If-Range", "If-None-Match", "If-Modified-Since"],
            &["Content-Length", "Content-Range", "Accept-Ranges", "ETag"],
        )
    }

    #[test]
    fn the_documented_rule_lets_every_origin_play() {
        let rules = [documented()];
        assert!(problems(Some(&rules), &CorsOrigins::Any).is_empty());
        assert!(problems(Some(&rules), &list(&["https://shop.example"])).is_empty());
    }

    #[test]
    fn no_rules_or_an_empty_list_is_a_problem() {
        assert_eq!(problems(None, &CorsOrigins::Any).len(), 1);
        assert_eq!(problems(Some(&[]), &CorsOrigins::Any).len(), 1);
    }

    #[test]
    fn listed_origins_need_a_matching_rule_each() {
        let rules = [rule(
            &["https://*.shop.example"],
            &["get", "head"],
            &["*"],
            EXPOSED,
        )];
        assert!(problems(Some(&rules), &list(&["https://m.shop.example"])).is_empty());
        let found = problems(
            Some(&rules),
            &list(&["https://m.shop.example", "https://other.example"]),
        );
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].contains("other.example"), "{found:?}");
        // Configured `*` needs a bucket `*`, not a pattern.
        assert_eq!(problems(Some(&rules), &CorsOrigins::Any).len(), 2);
    }

    #[test]
    fn the_first_matching_rule_decides_what_is_exposed() {
        let bare = rule(&["*"], &["GET", "HEAD"], &["range"], &[]);
        let found = problems(Some(&[bare.clone(), documented()]), &CorsOrigins::Any);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("Content-Range"), "{found:?}");
        assert!(problems(Some(&[documented(), bare]), &CorsOrigins::Any).is_empty());
    }

    #[test]
    fn range_and_head_are_required() {
        let no_range = rule(&["*"], &["GET", "HEAD"], &["If-None-Match"], EXPOSED);
        assert_eq!(problems(Some(&[no_range]), &CorsOrigins::Any).len(), 2);
        let no_head = rule(&["*"], &["GET"], &["Range"], EXPOSED);
        let found = problems(Some(&[no_head]), &CorsOrigins::Any);
        assert_eq!(found.len(), 1);
        assert!(found[0].contains("HEAD"), "{found:?}");
    }
}
