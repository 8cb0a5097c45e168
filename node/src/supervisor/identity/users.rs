//! The user database, read through getpwnam_r / getgrnam_r / getgrouplist (nix): a name, or
//! failing that a number, to the ids an instance runs with.

use nix::unistd::{Gid, Group, Uid, User};
use std::ffi::CString;

/// A user as its passwd entry gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub uid: u32,
    /// The primary group of the entry.
    pub gid: u32,
    pub home: String,
    pub shell: String,
}

/// `name` as a user name; a name that is all digits and no user's is taken as a uid
/// (it must still have an entry: herd needs its home and groups).
pub fn user(name: &str) -> Result<Account, String> {
    let by_name = User::from_name(name)
        .map_err(|e| format!("cannot read the user database for `{name}`: {e}"))?;
    let entry = match by_name {
        Some(u) => Some(u),
        None => match name.parse::<u32>() {
            Ok(uid) => User::from_uid(Uid::from_raw(uid))
                .map_err(|e| format!("cannot read the user database for uid {uid}: {e}"))?,
            Err(_) => None,
        },
    };
    let u = entry.ok_or_else(|| {
        format!(
            "unknown user `{}`: this host's user database has no such user (`getent passwd {}` finds it when it exists)",
            name.escape_debug(),
            name.escape_debug()
        )
    })?;
    Ok(Account {
        name: u.name,
        uid: u.uid.as_raw(),
        gid: u.gid.as_raw(),
        home: u.dir.to_string_lossy().into_owned(),
        shell: u.shell.to_string_lossy().into_owned(),
    })
}

/// `name` as a group name, or failing that as a gid with an entry. Returns (name, gid).
pub fn group(name: &str) -> Result<(String, u32), String> {
    let by_name = Group::from_name(name)
        .map_err(|e| format!("cannot read the group database for `{name}`: {e}"))?;
    let entry = match by_name {
        Some(g) => Some(g),
        None => match name.parse::<u32>() {
            Ok(gid) => Group::from_gid(Gid::from_raw(gid))
                .map_err(|e| format!("cannot read the group database for gid {gid}: {e}"))?,
            Err(_) => None,
        },
    };
    let g = entry.ok_or_else(|| {
        format!(
            "unknown group `{}`: this host's group database has no such group (`getent group {}` finds it when it exists)",
            name.escape_debug(),
            name.escape_debug()
        )
    })?;
    Ok((g.name, g.gid.as_raw()))
}

/// The group name of `gid`, for display; the number when it has no entry.
pub fn group_name(gid: u32) -> String {
    match Group::from_gid(Gid::from_raw(gid)) {
        Ok(Some(g)) => g.name,
        _ => gid.to_string(),
    }
}

/// The user name of `uid`, for display; the number when it has no entry.
pub fn user_name(uid: u32) -> String {
    match User::from_uid(Uid::from_raw(uid)) {
        Ok(Some(u)) => u.name,
        _ => uid.to_string(),
    }
}

/// Every group `account` belongs to per the group database, with `primary` among them (what
/// login and systemd's `User=` give a process).
pub fn groups_of(account: &Account, primary: u32) -> Result<Vec<u32>, String> {
    let name = CString::new(account.name.as_str())
        .map_err(|_| format!("user `{}` holds a NUL byte", account.name.escape_debug()))?;
    let mut groups: Vec<u32> = nix::unistd::getgrouplist(&name, Gid::from_raw(primary))
        .map_err(|e| {
            format!(
                "cannot list the groups of user `{}`: {e}",
                account.name.escape_debug()
            )
        })?
        .into_iter()
        .map(Gid::as_raw)
        .collect();
    groups.sort_unstable();
    groups.dedup();
    Ok(groups)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_resolves_by_name_and_by_number() {
        let by_name = user("root").unwrap();
        assert_eq!((by_name.uid, by_name.gid), (0, 0));
        assert_eq!(user("0").unwrap(), by_name);
        assert_eq!(group("root").unwrap(), ("root".to_string(), 0));
        assert_eq!(group("0").unwrap().1, 0);
        assert!(groups_of(&by_name, 0).unwrap().contains(&0));
    }

    #[test]
    fn unknown_names_say_so() {
        let e = user("no-such-user-herd").unwrap_err();
        assert!(e.starts_with("unknown user `no-such-user-herd`"), "{e}");
        let e = group("no-such-group-herd").unwrap_err();
        assert!(e.starts_with("unknown group `no-such-group-herd`"), "{e}");
    }
}
