//! What one design may still spend: the smaller of its own budget and what is left of the
//! day's spend limit. Checked before every agent call (RALPH iterations included), and every
//! call's cost is counted as soon as it returns, failed and timed-out calls too.

use std::sync::Mutex;

use crate::bus::store::Conn;

/// Where the day's spend is kept, and its limit.
#[derive(Clone)]
pub struct DailySpend {
    /// Redis, where `bus::spend` keeps the day's total.
    pub conn: Conn,
    /// USD per UTC day; None: no limit (the spend is still recorded).
    pub limit: Option<f64>,
}

impl std::fmt::Debug for DailySpend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DailySpend")
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

/// Why no more calls may be made.
#[derive(Debug, Clone, PartialEq)]
pub struct Exhausted {
    /// The day's limit (not the run's budget) is what ran out: tomorrow it may go on.
    pub daily: bool,
    /// The operator's explanation.
    pub reason: String,
}

/// One run's money.
#[derive(Debug)]
pub struct Purse {
    run_limit: Option<f64>,
    daily: Option<DailySpend>,
    spent: Mutex<f64>,
}

impl Purse {
    /// A purse with `run_limit` USD for the run, drawing on `daily`.
    pub fn new(run_limit: Option<f64>, daily: Option<DailySpend>) -> Purse {
        Purse {
            run_limit,
            daily,
            spent: Mutex::new(0.0),
        }
    }

    /// What this run has spent.
    pub fn spent(&self) -> f64 {
        self.spent.lock().map(|s| *s).unwrap_or(0.0)
    }

    /// What the next call may spend (None: no limit), or why nothing is left.
    pub async fn left(&self) -> Result<Option<f64>, Exhausted> {
        let run_left = self.run_limit.map(|b| b - self.spent());
        if let Some(left) = run_left
            && left <= 0.0
        {
            return Err(Exhausted {
                daily: false,
                reason: format!(
                    "the design's budget is spent: ${:.4} of ${:.4}",
                    self.spent(),
                    self.run_limit.unwrap_or_default()
                ),
            });
        }
        let daily_left = match &self.daily {
            Some(DailySpend {
                conn,
                limit: Some(limit),
            }) => {
                let mut conn = conn.clone();
                match crate::bus::spend::spent_today(&mut conn).await {
                    Ok(today) if today >= *limit => {
                        return Err(Exhausted {
                            daily: true,
                            reason: format!(
                                "daily spend limit reached: ${today:.2} of ${limit:.2} today (UTC)"
                            ),
                        });
                    }
                    Ok(today) => Some(limit - today),
                    Err(err) => {
                        // The listener's own gate stops on a limit it can read; a read that
                        // fails here falls back to the run's budget.
                        tracing::warn!("reading today's spend: {err:#}");
                        None
                    }
                }
            }
            _ => None,
        };
        Ok(match (run_left, daily_left) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        })
    }

    /// Counts one call's cost on `model`, here and in the day's spend.
    pub async fn record(&self, usd: f64, model: &str) {
        if !(usd.is_finite() && usd > 0.0) {
            return;
        }
        if let Ok(mut spent) = self.spent.lock() {
            *spent += usd;
        }
        if let Some(daily) = &self.daily {
            let mut conn = daily.conn.clone();
            if let Err(err) = crate::bus::spend::add(&mut conn, usd, "fullsend", model).await {
                tracing::warn!("recording spend: {err:#}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_run_budget_runs_out() {
        let purse = Purse::new(Some(1.0), None);
        assert_eq!(purse.left().await, Ok(Some(1.0)));
        purse.record(0.75, "m").await;
        assert_eq!(purse.left().await, Ok(Some(0.25)));
        purse.record(0.25, "m").await;
        let err = purse.left().await.unwrap_err();
        assert!(!err.daily, "{err:?}");
        purse.record(f64::NAN, "m").await;
        assert!((purse.spent() - 1.0).abs() < 1e-9);
        assert_eq!(Purse::new(None, None).left().await, Ok(None));
    }
}
