//! Telling people what went wrong, without telling them secrets.

/// An error and its causes on one line, `outer: cause: root cause` (many libraries, reqwest
/// and sqlx among them, keep the useful part in `source()`).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cur = c.source();
    }
    out
}

/// A URL fit for a message or a log: any user information (`user:password@`, or a token
/// used as a user name) is replaced by `***`. Only the authority is looked at, so an `@` in
/// the path or query is left alone, and a password containing `@` is hidden whole.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    match authority.rsplit_once('@') {
        Some((_, host)) => format!("{scheme}://***@{host}{tail}"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_information_is_hidden_whole() {
        assert_eq!(
            redact_url("postgres://cairn:s3cr@t@db:5432/cairn"),
            "postgres://***@db:5432/cairn"
        );
        assert_eq!(
            redact_url("http://ghp_TOKEN@proxy:3128"),
            "http://***@proxy:3128"
        );
        assert_eq!(
            redact_url("https://mirror/path@v1?x=a@b"),
            "https://mirror/path@v1?x=a@b"
        );
        assert_eq!(
            redact_url("/var/lib/cairn-hub/hub.db"),
            "/var/lib/cairn-hub/hub.db"
        );
    }

    #[test]
    fn chains_join_every_cause() {
        let io = std::io::Error::other("disk on fire");
        #[derive(Debug, thiserror::Error)]
        #[error("writing state")]
        struct Outer(#[source] std::io::Error);
        assert_eq!(error_chain(&Outer(io)), "writing state: disk on fire");
    }
}
