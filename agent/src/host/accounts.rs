//! Read-only views of the target's account databases (`/etc/passwd`, `/etc/group`,
//! `/etc/shadow`), parsed from files inside the root — never the host's NSS.

use super::Host;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswdEntry {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub gecos: String,
    pub home: String,
    pub shell: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupEntry {
    pub name: String,
    pub gid: u32,
    pub members: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Accounts {
    pub users: Vec<PasswdEntry>,
    pub groups: Vec<GroupEntry>,
    /// name → password field of /etc/shadow.
    pub shadow: Vec<(String, String)>,
}

impl Accounts {
    pub fn read(host: &Host) -> Accounts {
        let read = |p: &str| host.read_text(p).unwrap_or_default();
        Accounts {
            users: parse_passwd(&read("/etc/passwd")),
            groups: parse_group(&read("/etc/group")),
            shadow: read("/etc/shadow")
                .lines()
                .filter_map(|l| {
                    let mut f = l.split(':');
                    Some((f.next()?.to_string(), f.next()?.to_string()))
                })
                .collect(),
        }
    }

    pub fn user(&self, name: &str) -> Option<&PasswdEntry> {
        self.users.iter().find(|u| u.name == name)
    }

    pub fn group(&self, name: &str) -> Option<&GroupEntry> {
        self.groups.iter().find(|g| g.name == name)
    }

    pub fn group_by_gid(&self, gid: u32) -> Option<&GroupEntry> {
        self.groups.iter().find(|g| g.gid == gid)
    }

    pub fn shadow_password(&self, name: &str) -> Option<&str> {
        self.shadow
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, p)| p.as_str())
    }

    /// Groups that list `user` as a member.
    pub fn supplementary(&self, user: &str) -> Vec<&str> {
        self.groups
            .iter()
            .filter(|g| g.members.iter().any(|m| m == user))
            .map(|g| g.name.as_str())
            .collect()
    }
}

pub fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 7 {
                return None;
            }
            Some(PasswdEntry {
                name: f[0].to_string(),
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
                gecos: f[4].to_string(),
                home: f[5].to_string(),
                shell: f[6].to_string(),
            })
        })
        .collect()
}

pub fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 4 {
                return None;
            }
            Some(GroupEntry {
                name: f[0].to_string(),
                gid: f[2].parse().ok()?,
                members: f[3]
                    .split(',')
                    .filter(|m| !m.is_empty())
                    .map(str::to_string)
                    .collect(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rows() {
        let u = parse_passwd("root:x:0:0:root:/root:/bin/bash\nbad line\n");
        assert_eq!(u.len(), 1);
        assert_eq!(u[0].home, "/root");
        let g = parse_group("sudo:x:27:alice,bob\nusers:x:100:\n");
        assert_eq!(g[0].members, vec!["alice", "bob"]);
        assert!(g[1].members.is_empty());
    }
}
