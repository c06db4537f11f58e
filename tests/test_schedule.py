"""Issue 14: `trading-lib schedule` runs nothing on an exchange holiday or a weekend (exchange-calendars XNYS), moves a
weekly run to the week's last session, reports runs that did not happen, and its APScheduler jobs fire on sessions."""
import datetime as dt
import subprocess

from trading_lib.config import load_settings
from trading_lib.schedule import History, build_scheduler, missed_runs, parse_entry, planned_runs, report_missed, run_entry, sessions


def test_holidays_and_weekends_have_no_runs():
    s = load_settings()
    p = planned_runs("2026-06-29", "2026-07-10", s)  # Friday 3 July 2026: Independence Day observed, NYSE closed
    days = set(p.session.astype(str))
    assert "2026-07-03" not in days and "2026-07-04" not in days and "2026-07-05" not in days
    assert p[p.name == "retrain"].session.astype(str).tolist() == ["2026-07-02", "2026-07-10"]  # weekly run moves to Thursday
    assert p.groupby("name").size().to_dict() == {"live": 9, "monitor": 9, "retrain": 2, "backtest": 2, "train": 1}  # 9 sessions
    assert p[p.name == "train"].session.astype(str).tolist() == ["2026-06-30"]  # monthly: June's last session
    p = planned_runs("2026-12-24", "2026-12-28", s)  # Christmas Friday 25 December; weekend 26-27
    assert sorted(set(p.session.astype(str))) == ["2026-12-24", "2026-12-28"]


def test_apscheduler_job_skips_the_holiday(tmp_path):
    s = load_settings(schedule__entries="live@09:20/D")
    sch = build_scheduler(s, tmp_path, blocking=False); sch.start(paused=True)
    try:
        (job,) = sch.get_jobs()
        t = job.trigger.get_next_fire_time(dt.datetime(2026, 7, 2, 13, 20, tzinfo=dt.timezone.utc),
                                           dt.datetime(2026, 7, 2, 20, 0, tzinfo=dt.timezone.utc))
        assert t == dt.datetime(2026, 7, 6, 13, 20, tzinfo=dt.timezone.utc)  # Thursday → Monday 09:20 EDT
        assert sessions(job.next_run_time, job.next_run_time, s).size == 1
    finally: sch.shutdown(wait=False)


def test_missed_runs_reported_and_recorded(tmp_path, capsys):
    s = load_settings()
    h = History(tmp_path)
    h.alive("2026-07-01 12:00Z")
    h.append(name="live", planned="2026-07-01 13:20:00+00:00", status="ok", rc=0)
    m = missed_runs(h, s, "2026-07-06 15:00Z")
    assert m[m.name == "live"].session.astype(str).tolist() == ["2026-07-02", "2026-07-06"]  # not 1 July (ran), not the holiday
    report_missed(h, m, "scheduler was not running")
    err = capsys.readouterr().err
    assert "MISSED: live planned 2026-07-02 13:20:00+00:00" in err and "2026-07-03" not in err
    assert sum(r["status"] == "missed" for r in h.records()) == len(m) and len(m) == 6  # live 2 & 6 July, monitor 1 & 2 July, retrain and backtest 2 July
    ran = []
    rc = run_entry(parse_entry("retrain@17:30/W"), m.run_at.iloc[-1], tmp_path, h,
                   runner=lambda argv, cwd: ran.append(argv) or subprocess.CompletedProcess(argv, 0), exe="trading-lib")
    assert rc == 0 and ran == [["trading-lib", "run", "retrain", "--no-progress"]] and h.records()[-1]["status"] == "ok"
