//! `state.json` is checked like an app file before the daemon acts on it: anyone who could
//! edit it (or a bug, or a disk) must not make a root daemon abort, fork four billion
//! processes or signal pid 1. A state written by a newer herd is refused outright, never
//! replaced by an older backup.

use super::limits::{MAX_APPS, MAX_HOST_INSTANCES};
use super::spec::MAX_INSTANCES;
use super::{App, Origin, SNAPSHOT_VERSION, Snapshot, managed};
use std::collections::HashSet;

/// Refuses a state this herd does not understand (a newer `version`). Unlike the other
/// checks this must not fall back to the backup: that would drop the newer state and then
/// overwrite it.
pub fn check_snapshot_version(s: &Snapshot) -> Result<(), String> {
    if s.version > SNAPSHOT_VERSION {
        return Err(format!(
            "written by a newer herd (state version {}; this herd reads up to {SNAPSHOT_VERSION}); run that herd version, or move the file aside to start with an empty state",
            s.version
        ));
    }
    Ok(())
}

/// The same checks and limits as an app file, plus what only a state file can hold
/// (instances, pids). `Err` says what is wrong, naming the app and key.
pub fn validate_snapshot(s: &Snapshot) -> Result<(), String> {
    check_snapshot_version(s)?;
    if s.apps.len() > MAX_APPS {
        return Err(format!(
            "{} apps is more than the limit of {MAX_APPS} per host",
            s.apps.len()
        ));
    }
    let mut names = HashSet::new();
    let mut total: u64 = 0;
    for app in &s.apps {
        let name = &app.spec.name;
        check_spec(app)?;
        if !names.insert(name.as_str()) {
            return Err(format!("app `{name}` is listed more than once"));
        }
        total = total.saturating_add(u64::from(app.spec.instances));
        if app.instances.len() > MAX_INSTANCES as usize {
            return Err(format!(
                "app `{name}`: {} instance records is more than the limit of {MAX_INSTANCES}",
                app.instances.len()
            ));
        }
        let mut indices = HashSet::new();
        for inst in &app.instances {
            if inst.index >= MAX_INSTANCES || !indices.insert(inst.index) {
                return Err(format!(
                    "app `{name}`: instance index {} is out of range or repeated",
                    inst.index
                ));
            }
            let pids = inst
                .pid
                .into_iter()
                .chain(inst.retiring.as_ref().map(|r| r.pid));
            if let Some(pid) = pids.into_iter().find(|p| *p <= 1 || *p > i32::MAX as u32) {
                return Err(format!(
                    "app `{name}`: instance {}: pid {pid} can never be an instance",
                    inst.index
                ));
            }
        }
    }
    if total > MAX_HOST_INSTANCES {
        return Err(format!(
            "{total} instances is more than the limit of {MAX_HOST_INSTANCES} per host"
        ));
    }
    Ok(())
}

/// An app's spec, checked as an app file's. A cluster instance is the local app `web@3`,
/// a job's run the local app `nightly~17`: names no app file may use, whose part before
/// `@` or `~` follows the app-file rules.
fn check_spec(app: &App) -> Result<(), String> {
    let name = &app.spec.name;
    if app.origin == Origin::Job {
        let base = name
            .rsplit_once('~')
            .filter(|(_, run)| run.parse::<u64>().is_ok())
            .map(|(job, _)| job)
            .ok_or_else(|| format!("job run `{name}`: key `name`: not of the form `job~run`"))?;
        let mut spec = app.spec.clone();
        spec.name = base.to_string();
        return spec.check().map_err(|e| format!("job run `{name}`: {e}"));
    }
    if app.origin != Origin::Cluster {
        return app.spec.check();
    }
    let (base, _) = managed::split(name)
        .ok_or_else(|| format!("cluster app `{name}`: key `name`: not of the form `app@index`"))?;
    let mut spec = app.spec.clone();
    spec.name = base.to_string();
    spec.check()
        .map_err(|e| format!("cluster instance `{name}`: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervisor::instance::Instance;
    use crate::supervisor::spec::AppSpec;

    fn snapshot(spec: AppSpec) -> Snapshot {
        Snapshot {
            version: SNAPSHOT_VERSION,
            boot_id: None,
            apps: vec![App::new(spec, Origin::Local)],
        }
    }

    #[test]
    fn a_sane_state_passes() {
        assert_eq!(
            validate_snapshot(&snapshot(AppSpec::quick("web", "x", vec![]))),
            Ok(())
        );
        assert_eq!(validate_snapshot(&Snapshot::default()), Ok(()));
    }

    #[test]
    fn app_file_limits_apply() {
        let mut spec = AppSpec::quick("web", "x", vec![]);
        spec.instances = 1;
        let mut s = snapshot(spec);
        s.apps[0].spec.instances = u32::MAX;
        let err = validate_snapshot(&s).unwrap_err();
        assert!(
            err.starts_with("app `web`: key `instances`: 4294967295 is more than"),
            "{err}"
        );
        let mut s = snapshot(AppSpec::quick("web", "x", vec![]));
        s.apps[0].spec.stop_timeout_s = u64::MAX;
        assert!(
            validate_snapshot(&s)
                .unwrap_err()
                .contains("stop_timeout_s")
        );
    }

    #[test]
    fn pid_one_and_repeated_indices_are_refused() {
        let mut s = snapshot(AppSpec::quick("web", "x", vec![]));
        s.apps[0].instances[0].pid = Some(1);
        assert!(
            validate_snapshot(&s)
                .unwrap_err()
                .contains("pid 1 can never be an instance")
        );
        let mut s = snapshot(AppSpec::quick("web", "x", vec![]));
        s.apps[0].instances.push(Instance::new(0));
        assert!(validate_snapshot(&s).unwrap_err().contains("repeated"));
    }

    #[test]
    fn cluster_instances_are_named_app_at_index() {
        let cluster = |name: &str| Snapshot {
            version: SNAPSHOT_VERSION,
            boot_id: None,
            apps: vec![App::new(AppSpec::quick(name, "x", vec![]), Origin::Cluster)],
        };
        assert_eq!(validate_snapshot(&cluster("web@3")), Ok(()));
        assert!(
            validate_snapshot(&cluster("web"))
                .unwrap_err()
                .contains("app@index")
        );
        assert!(
            validate_snapshot(&cluster("we b@3"))
                .unwrap_err()
                .contains("key `name`")
        );
        // A local app may not take such a name.
        assert!(
            validate_snapshot(&snapshot(AppSpec::quick("web@3", "x", vec![])))
                .unwrap_err()
                .contains("key `name`")
        );
    }

    #[test]
    fn a_newer_version_is_refused() {
        let s = Snapshot {
            version: SNAPSHOT_VERSION + 1,
            boot_id: None,
            apps: vec![],
        };
        let err = check_snapshot_version(&s).unwrap_err();
        assert!(err.contains("written by a newer herd"), "{err}");
        assert_eq!(validate_snapshot(&s).unwrap_err(), err);
    }
}
