//! `cron_restart`: restart an app at the times of its 5-field cron expression (local time).
//! Apps with a health probe are reloaded (one instance at a time), others restarted.

use super::facts::Fact;
use super::{Desired, Supervisor};
use chrono::{DateTime, Local};
use std::collections::HashMap;
use std::time::Duration;
use tracing::warn;

impl Supervisor {
    pub async fn run_cron(&self) {
        let mut next: HashMap<String, (String, DateTime<Local>)> = HashMap::new();
        let mut changes = self.subscribe();
        loop {
            // Without a cron app there is nothing to wake up for until the apps change.
            let any = self
                .lock()
                .apps
                .values()
                .any(|a| a.spec.cron_restart.is_some());
            if !any {
                next.clear();
                if changes.changed().await.is_err() {
                    return;
                }
                continue;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            let due = self.due_cron_restarts(&mut next, Local::now());
            for (name, reload) in due {
                let me = self.clone();
                tokio::spawn(async move {
                    me.record(&name, Fact::CronRestart { reload });
                    let result = if reload {
                        me.reload(&name).await
                    } else {
                        me.restart(&name).await
                    };
                    if let Err(e) = result {
                        warn!(app = %name, error = %e, "cron restart failed");
                    }
                });
            }
        }
    }

    /// Which apps are due at `now` (with whether to reload rather than restart); keeps each
    /// app's next time in `next`.
    fn due_cron_restarts(
        &self,
        next: &mut HashMap<String, (String, DateTime<Local>)>,
        now: DateTime<Local>,
    ) -> Vec<(String, bool)> {
        let t = self.lock();
        next.retain(|name, (expr, _)| {
            t.apps
                .get(name)
                .is_some_and(|a| a.spec.cron_restart.as_deref() == Some(expr))
        });
        let mut due = Vec::new();
        for app in t.apps.values() {
            let (Some(expr), Some(cron)) = (app.spec.cron_restart.as_ref(), app.spec.cron()) else {
                continue;
            };
            let Some(at) = next.get(&app.spec.name).map(|(_, at)| *at) else {
                if let Ok(at) = cron.find_next_occurrence(&now, false) {
                    next.insert(app.spec.name.clone(), (expr.clone(), at));
                }
                continue;
            };
            if now < at {
                continue;
            }
            if app.desired == Desired::Running && !t.closing {
                due.push((app.spec.name.clone(), app.spec.health.is_some()));
            }
            match cron.find_next_occurrence(&now, false) {
                Ok(at) => {
                    next.insert(app.spec.name.clone(), (expr.clone(), at));
                }
                Err(_) => {
                    next.remove(&app.spec.name);
                }
            }
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervisor::spec::AppSpec;
    use crate::supervisor::{App, Origin};

    fn supervisor_with(cron: &str) -> Supervisor {
        let sup = crate::supervisor::testing::on_real_os();
        let mut spec = AppSpec::quick("nightly", "true", vec![]);
        spec.cron_restart = Some(cron.into());
        sup.lock()
            .apps
            .insert("nightly".into(), App::new(spec, Origin::Local));
        sup
    }

    #[test]
    fn an_app_is_due_once_per_cron_time() {
        use chrono::TimeZone;
        let sup = supervisor_with("30 3 * * *");
        let mut next = HashMap::new();
        let at = |h, m, s| {
            Local
                .with_ymd_and_hms(2026, 11, 22, h, m, s)
                .single()
                .unwrap()
        };
        assert!(
            sup.due_cron_restarts(&mut next, at(3, 0, 0)).is_empty(),
            "the first look only schedules"
        );
        assert_eq!(next["nightly"].1, at(3, 30, 0));
        assert!(sup.due_cron_restarts(&mut next, at(3, 29, 59)).is_empty());
        assert_eq!(
            sup.due_cron_restarts(&mut next, at(3, 30, 0)),
            vec![("nightly".to_string(), false)]
        );
        assert!(
            sup.due_cron_restarts(&mut next, at(3, 30, 1)).is_empty(),
            "fired twice"
        );
        assert_eq!(next["nightly"].1, at(3, 30, 0) + chrono::Duration::days(1));
    }

    #[test]
    fn a_changed_expression_is_rescheduled() {
        use chrono::TimeZone;
        let sup = supervisor_with("0 4 * * *");
        let mut next = HashMap::new();
        let now = Local
            .with_ymd_and_hms(2026, 11, 22, 1, 0, 0)
            .single()
            .unwrap();
        sup.due_cron_restarts(&mut next, now);
        if let Some(app) = sup.lock().apps.get_mut("nightly") {
            app.spec.cron_restart = Some("0 2 * * *".into());
        }
        sup.due_cron_restarts(&mut next, now);
        assert_eq!(
            next["nightly"].1,
            Local
                .with_ymd_and_hms(2026, 11, 22, 2, 0, 0)
                .single()
                .unwrap()
        );
    }
}
