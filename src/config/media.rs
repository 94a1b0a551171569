//! `[media]`: how `/media` (published outputs, live playlists and segments)
//! answers browsers.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct MediaConfig {
    /// Web origins whose pages may read `/media` with scripts (hls.js, Shaka
    /// Player, a shop's page): `*` (the default: published media is public)
    /// or a list such as `https://shop.example, https://m.shop.example`. In
    /// the environment: comma-separated.
    pub cors_origins: CorsOrigins,
}

/// `*`, or exact origins (`scheme://host[:port]`, lowercased).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum CorsOrigins {
    #[default]
    Any,
    List(Vec<String>),
}

impl Serialize for CorsOrigins {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            CorsOrigins::Any => s.collect_seq(["*"]),
            CorsOrigins::List(list) => s.collect_seq(list),
        }
    }
}

impl<'de> Deserialize<'de> for CorsOrigins {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        CorsOrigins::parse(&super::list_or_joined(d)?).map_err(serde::de::Error::custom)
    }
}

impl CorsOrigins {
    fn parse(items: &[String]) -> Result<CorsOrigins, String> {
        let items: Vec<&str> = items
            .iter()
            .map(|i| i.trim())
            .filter(|i| !i.is_empty())
            .collect();
        if items.contains(&"*") {
            return if items.len() == 1 {
                Ok(CorsOrigins::Any)
            } else {
                Err("`*` allows every origin: list origins or `*`, not both".into())
            };
        }
        if items.is_empty() {
            return Err("list at least one origin, or `*`".into());
        }
        items
            .iter()
            .map(|item| origin(item))
            .collect::<Result<Vec<_>, _>>()
            .map(CorsOrigins::List)
    }
}

/// `item` as a browser sends it in `Origin`: scheme, host and a port other
/// than the scheme's default, nothing else.
fn origin(item: &str) -> Result<String, String> {
    let bad = |why: &str| format!("`{item}` is not an origin ({why}; e.g. `https://shop.example`)");
    let url = url::Url::parse(item).map_err(|_| bad("not a URL"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("not http or https"));
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err(bad("it has a path"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("it has credentials"));
    }
    let host = url.host_str().ok_or_else(|| bad("no host"))?;
    Ok(match url.port() {
        Some(port) => format!("{}://{host}:{port}", url.scheme()),
        None => format!("{}://{host}", url.scheme()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(items: &[&str]) -> Result<CorsOrigins, String> {
        CorsOrigins::parse(&items.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn any_or_exact_origins() {
        assert_eq!(parse(&["*"]), Ok(CorsOrigins::Any));
        assert_eq!(
            parse(&[
                "https://Shop.Example",
                " http://localhost:3000 ",
                "https://a.example:443"
            ]),
            Ok(CorsOrigins::List(vec![
                "https://shop.example".into(),
                "http://localhost:3000".into(),
                "https://a.example".into(),
            ]))
        );
    }

    #[test]
    fn what_is_not_an_origin_is_refused() {
        for bad in [
            &["*", "https://a.example"][..],
            &[],
            &["https://a.example/path"],
            &["ftp://a.example"],
            &["a.example"],
            &["https://user@a.example"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn comes_from_a_list_or_one_string() {
        let from_list: MediaConfig =
            serde_json::from_str(r#"{"cors_origins": ["https://a.example"]}"#).unwrap();
        let from_env: MediaConfig =
            serde_json::from_str(r#"{"cors_origins": "https://a.example, https://b.example"}"#)
                .unwrap();
        assert_eq!(
            from_list.cors_origins,
            CorsOrigins::List(vec!["https://a.example".into()])
        );
        assert_eq!(
            from_env.cors_origins,
            CorsOrigins::List(vec!["https://a.example".into(), "https://b.example".into()])
        );
        assert_eq!(MediaConfig::default().cors_origins, CorsOrigins::Any);
    }
}
