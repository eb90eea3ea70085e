//! URLs of providers, read without a parser: their secret parts (credentials, query string)
//! masked for messages, and their host (what decides whether a vendor's environment key may go
//! there). Plain Rust, used by the settings and the providers.

/// The secret parts of a URL: its credentials (`user:password` before `@`) and its query
/// string.
fn secrets(url: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if let Some((userinfo, _)) = authority.rsplit_once('@') {
        if !userinfo.is_empty() {
            out.push(userinfo);
        }
    }
    if let Some((_, query)) = url.split_once('?') {
        let query = query.split('#').next().unwrap_or("");
        if !query.is_empty() {
            out.push(query);
        }
    }
    out
}

/// `text` with `url`'s secrets masked.
pub fn without_secrets(text: &str, url: &str) -> String {
    secrets(url)
        .into_iter()
        .fold(text.to_string(), |out, secret| out.replace(secret, "****"))
}

/// A URL without its secrets, for messages.
pub fn shown(url: &str) -> String {
    without_secrets(url, url)
}

/// The host of `url`, lowercased, without scheme, credentials, port, path or query: what
/// decides whether a vendor's environment key may go there.
pub fn host(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(v6) = host_port.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        host_port.split(':').next().unwrap_or("")
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_is_the_host_alone() {
        assert_eq!(host("https://api.openai.com/v1"), "api.openai.com");
        assert_eq!(host("https://API.OpenAI.com.:443/v1?x=1"), "api.openai.com");
        // Credentials naming the vendor do not make another host the vendor's.
        assert_eq!(host("http://api.openai.com@127.0.0.1:9/v1"), "127.0.0.1");
        assert_eq!(
            host("https://api.openai.com.evil.example/v1"),
            "api.openai.com.evil.example"
        );
        assert_eq!(host("http://[::1]:8080/v1"), "::1");
        assert_eq!(host("api.anthropic.com"), "api.anthropic.com");
    }
}
