"""The dashboard's routes under /ui: pages (GET) and actions (POST, then 303 back).

Every page is complete HTML, readable with JavaScript off; htmx (served from
/ui/static) refreshes the live parts in place. Actions are plain forms carrying the
CSRF token. Store calls run through the request's store gate, as the JSON API's.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote, urlencode
from uuid import UUID

from litestar import Request, Response, get, post
from litestar.di import NamedDependency
from litestar.exceptions import HTTPException, ValidationException
from litestar.params import PathParameter, QueryParameter
from litestar.response import Redirect, Template
from litestar.status_codes import HTTP_303_SEE_OTHER

from vesper.application.fleet import GetFleet
from vesper.application.management import (
    BulkJobs,
    CancelJob,
    GetActivity,
    GetJob,
    GetStats,
    GetSummary,
    ListJobs,
    RetryJob,
)
from vesper.domain.bulk import BulkAction, BulkFilter
from vesper.domain.errors import InvalidRequest
from vesper.domain.job import JobId
from vesper.domain.query import MAX_PAGE, JobQuery
from vesper.domain.states import Status
from vesper.entrypoints.http.deps import StoreCalls
from vesper.entrypoints.http.ui import seams, views
from vesper.entrypoints.http.ui.session import (
    CSRF_FIELD,
    checked_form,
    csrf_cookie,
    csrf_token_of,
    expired_session_cookie,
    new_csrf_token,
    new_session,
    session_cookie,
    token_matches,
)

PAGE_SIZE = 50
# the form's fields as typed: checked here, so that a bad value gets the page's own message
TextQuery = Annotated[str | None, QueryParameter(required=False)]
PathText = Annotated[str, PathParameter()]
NOTICES = {
    "retried": "The job was sent back to pending.",
    "cancelled": "The job was cancelled.",
    "cancel-requested": "A cancel was requested: the job stops at its worker's next heartbeat.",
    "bulk": "The selected jobs were changed.",
    "logged-out": "You are logged out.",
}


def page(
    request: Request[Any, Any, Any], template: str, status_code: int = 200, **context: Any
) -> Template:
    """A page with the context every template has: nav, CSRF token, login state."""
    csrf, fresh = csrf_token_of(request)
    token = request.app.state.ui_token
    notice = NOTICES.get(request.query_params.get("notice", ""))
    changed, skipped = (request.query_params.get(k, "") for k in ("changed", "skipped"))
    if notice is NOTICES["bulk"] and changed.isdigit() and skipped.isdigit():
        notice = (
            f"{changed} changed, {skipped} skipped (not in a status the action starts from,"
            " or holding a unique key another active job holds)."
        )
    response = Template(
        template_name=template,
        status_code=status_code,
        context={
            "csrf_field": CSRF_FIELD,
            "csrf": csrf,
            "auth": token is not None,
            "notice": notice,
            "path": request.url.path,
            "nav": "",
            **context,
        },
        headers={"Cache-Control": "no-store"},  # job data: never from a shared cache
    )
    if fresh:
        response.set_cookie(csrf_cookie(request, csrf))
    return response


def back(path: str, **params: str) -> Redirect:
    query = f"?{urlencode(params)}" if params else ""
    return Redirect(path + query, status_code=HTTP_303_SEE_OTHER)


# -- pages -----------------------------------------------------------------------------


@get("/")
async def overview_page(
    request: Request[Any, Any, Any],
    get_summary: NamedDependency[GetSummary],
    get_fleet: NamedDependency[GetFleet],
    get_activity: NamedDependency[GetActivity],
    ui_container: NamedDependency[Any],
    store_calls: NamedDependency[StoreCalls],
) -> Template:
    def read() -> views.Overview:
        summary = get_summary()
        by_queue = seams.queue_counts(ui_container, summary)
        return views.overview(summary, get_fleet(), get_activity(), by_queue)

    return page(request, "overview.html", view=await store_calls.run(read), nav="overview")


@get("/jobs")
async def jobs_page(
    request: Request[Any, Any, Any],
    list_jobs: NamedDependency[ListJobs],
    store_calls: NamedDependency[StoreCalls],
    status: TextQuery = None,
    type: TextQuery = None,
    priority: TextQuery = None,
    q: TextQuery = None,
    cursor: TextQuery = None,
    queue: TextQuery = None,
) -> Template:
    query = JobQuery(
        status=_status(status),
        type=type or None,
        priority=_priority(priority),
        queue=queue or None,
        search=q.strip() or None if q else None,
        cursor=cursor or None,
        limit=PAGE_SIZE,
    )
    view = await store_calls.presented(lambda p: views.job_list(p, query), list_jobs, query)
    return page(
        request,
        "jobs.html",
        view=view,
        statuses=views.STATUSES,
        priorities=views.PRIORITIES,
        nav="jobs",
    )


@get("/jobs/{job_id:str}")
async def job_page(
    request: Request[Any, Any, Any],
    job_id: PathText,
    get_job: NamedDependency[GetJob],
    store_calls: NamedDependency[StoreCalls],
) -> Template:
    view = await store_calls.presented(views.job_detail, get_job, _job_id(job_id))
    return page(request, "job.html", view=view, nav="jobs")


@get("/workers")
async def workers_page(
    request: Request[Any, Any, Any],
    get_fleet: NamedDependency[GetFleet],
    list_jobs: NamedDependency[ListJobs],
    get_stats: NamedDependency[GetStats],
    store_calls: NamedDependency[StoreCalls],
) -> Template:
    def read() -> views.Workers:
        fleet = get_fleet()
        processing = list_jobs(JobQuery(status=Status.PROCESSING, limit=MAX_PAGE))
        now = list_jobs.jobs.now()  # the store's clock, as the heartbeats'
        return views.workers(fleet, processing, now)

    return page(request, "workers.html", view=await store_calls.run(read), nav="workers")


@get("/queues")
async def queues_page(
    request: Request[Any, Any, Any],
    ui_container: NamedDependency[Any],
    store_calls: NamedDependency[StoreCalls],
) -> Template:
    view = await store_calls.run(seams.queues_page, ui_container)
    return page(request, "queues.html", view=view, nav="queues")


@get("/schedules")
async def schedules_page(
    request: Request[Any, Any, Any],
    ui_container: NamedDependency[Any],
    store_calls: NamedDependency[StoreCalls],
) -> Template:
    view = await store_calls.run(seams.schedules_page, ui_container)
    return page(request, "schedules.html", view=view, nav="schedules")


# -- actions ---------------------------------------------------------------------------


@post("/jobs/{job_id:str}/retry")
async def retry_action(
    request: Request[Any, Any, Any],
    job_id: PathText,
    retry_job: NamedDependency[RetryJob],
    store_calls: NamedDependency[StoreCalls],
) -> Redirect:
    await checked_form(request)
    job = await store_calls.run(retry_job, _job_id(job_id))
    return back(f"/ui/jobs/{job.id}", notice="retried")


@post("/jobs/{job_id:str}/cancel")
async def cancel_action(
    request: Request[Any, Any, Any],
    job_id: PathText,
    cancel_job: NamedDependency[CancelJob],
    store_calls: NamedDependency[StoreCalls],
) -> Redirect:
    await checked_form(request)
    job = await store_calls.run(cancel_job, _job_id(job_id))
    # a running job only gets a cancel request (the API's 202): its worker acts on it
    notice = "cancel-requested" if job.status is Status.PROCESSING else "cancelled"
    return back(f"/ui/jobs/{job.id}", notice=notice)


@post("/jobs/bulk")
async def bulk_action(
    request: Request[Any, Any, Any],
    bulk_jobs: NamedDependency[BulkJobs],
    store_calls: NamedDependency[StoreCalls],
) -> Redirect:
    await checked_form(request)
    form = await request.form()
    action = form.get("action")
    if action not in {"retry", "cancel"}:
        raise InvalidRequest("action", "must be retry or cancel")
    selected = [_job_id(v) for v in form.getall("job") if isinstance(v, str)][:PAGE_SIZE]
    # the selected jobs that the action starts from, in batches: the bulk use case
    where = BulkFilter(ids=frozenset(selected))
    done = await store_calls.run(bulk_jobs, BulkAction(action), where)
    skipped = len(set(selected)) - done.changed
    return back("/ui/jobs", notice="bulk", changed=str(done.changed), skipped=str(skipped))


@post("/queues/{name:str}/{action:str}")
async def queue_action(
    request: Request[Any, Any, Any],
    name: PathText,
    action: PathText,
    ui_container: NamedDependency[Any],
    store_calls: NamedDependency[StoreCalls],
) -> Redirect:
    form = await checked_form(request)
    if action in {"pause", "resume"}:
        await store_calls.run(seams.set_queue_paused, ui_container, name, action == "pause")
    elif action == "limits":
        limits = {k: v for k, v in form.items() if k != CSRF_FIELD}
        await store_calls.run(seams.set_queue_limits, ui_container, name, limits)
    else:
        raise HTTPException(status_code=404, detail="no such action")
    return back("/ui/queues")


@post("/schedules/{name:str}/{action:str}")
async def schedule_action(
    request: Request[Any, Any, Any],
    name: PathText,
    action: PathText,
    ui_container: NamedDependency[Any],
    store_calls: NamedDependency[StoreCalls],
) -> Redirect:
    await checked_form(request)
    if action not in {"pause", "resume"}:
        raise HTTPException(status_code=404, detail="no such action")
    await store_calls.run(seams.set_schedule_paused, ui_container, name, action == "pause")
    return back("/ui/schedules")


# -- login -----------------------------------------------------------------------------


@get("/login", opt={"ui_public": True})
async def login_page(
    request: Request[Any, Any, Any], next: TextQuery = None
) -> Template | Redirect:
    if request.app.state.ui_token is None:
        return back("/ui")
    return page(request, "login.html", next=_local(next or "/ui"), error=None, nav="login")


@post("/login", opt={"ui_public": True})
async def login_action(request: Request[Any, Any, Any]) -> Response[Any]:
    form = await checked_form(request)
    token = request.app.state.ui_token
    target = _local(form.get("next", "/ui"))
    if token is None:
        return back("/ui")
    if not token_matches(form.get("token", ""), token):
        return page(
            request,
            "login.html",
            status_code=401,
            next=target,
            error="That is not the server's API token.",
            nav="login",
        )
    response = Redirect(target, status_code=HTTP_303_SEE_OTHER)
    response.set_cookie(session_cookie(request, new_session(token)))
    response.set_cookie(csrf_cookie(request, new_csrf_token()))  # no token from before login
    return response


@post("/logout", opt={"ui_public": True})
async def logout_action(request: Request[Any, Any, Any]) -> Redirect:
    await checked_form(request)
    response = back("/ui/login", notice="logged-out")
    response.set_cookie(expired_session_cookie(request))
    return response


# -- helpers ---------------------------------------------------------------------------


def _local(target: str) -> str:
    """A redirect target inside the dashboard; anything else becomes /ui."""
    if target.startswith("/ui") and not target.startswith("//") and "\\" not in target:
        return target
    return "/ui"


def login_url(request: Request[Any, Any, Any]) -> str:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return f"/ui/login?next={quote(target, safe='')}"


def _job_id(text: str) -> JobId:
    try:
        return JobId(UUID(text))
    except ValueError:
        raise ValidationException(detail=f"not a job id: {text[:40]!r}") from None


def _status(text: str | None) -> Status | None:
    if not text:
        return None
    try:
        return Status(text)
    except ValueError:
        raise InvalidRequest("status", f"must be one of {', '.join(views.STATUSES)}") from None


def _priority(text: str | None) -> int | None:
    if not text:
        return None
    if not text.isdigit():
        raise InvalidRequest("priority", "must be an integer from 0 to 10")
    return int(text)


UI_HANDLERS = [
    overview_page,
    jobs_page,
    job_page,
    workers_page,
    queues_page,
    schedules_page,
    retry_action,
    cancel_action,
    bulk_action,
    queue_action,
    schedule_action,
    login_page,
    login_action,
    logout_action,
]
