"""Store I/O for the daemon's schedule: APScheduler keeps its jobs in a table of the project's database.
Mixed into ``Store`` (all storage I/O stays in store/); APScheduler is imported only when asked for."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqlalchemy import inspect, select

if TYPE_CHECKING:
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
    from sqlalchemy import Engine

__all__ = ["JOB_TABLE", "JobStore"]

# APScheduler's table (migrations leave it alone: env.py skips tables named apscheduler*).
JOB_TABLE = "apscheduler_jobs"


class JobStore:
    engine: Engine

    def scheduler_jobs(self) -> SQLAlchemyJobStore:
        """An APScheduler job store on this database (its table is made when the scheduler starts)."""
        from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore

        return SQLAlchemyJobStore(engine=self.engine, tablename=JOB_TABLE)

    def job_run_times(self) -> dict[str, datetime]:
        """Next run time per job id as the (running or last) daemon saved them; {} if it never ran.
        Jobs that will not run again (no next time) are left out."""
        if not inspect(self.engine).has_table(JOB_TABLE):
            return {}
        table = self.scheduler_jobs().jobs_t
        with self.engine.connect() as conn:
            rows = conn.execute(select(table.c.id, table.c.next_run_time)).all()
        return {r.id: datetime.fromtimestamp(r.next_run_time, UTC) for r in rows if r.next_run_time is not None}
