"""What the bot says. All plain text: nothing here is sent with a parse mode."""

from __future__ import annotations

import datetime as dt
import re

from storage import Task, TaskState, User
from tasks.stats import PeriodStats, Stats

KNOWN_PLATFORMS = (
    "Douyin (抖音)",
    "Kuaishou (快手)",
    "Xiaohongshu (小红书)",
    "Bilibili (哔哩哔哩)",
    "TikTok",
    "YouTube",
)

HELP = (
    "Send me a link to a video, or paste a platform's share text as it is, for example:\n"
    "7.43 复制打开抖音，看看【某某的作品】今天的视频 https://v.douyin.com/iRNBho6u/\n\n"
    "I answer at once with a task number, and send the video's text when it is ready "
    "(usually within a minute or two), with a Retry button in case it is not right.\n\n"
    "Known to work: " + ", ".join(KNOWN_PLATFORMS) + ". Other sites may work too.\n\n"
    "In a group, mention me with the link, or send it as a reply to one of my messages.\n\n"
    "Commands:\n"
    "/tasks - your recent tasks\n"
    "/status N - one task, by its number\n"
    "/help - this message"
)

START = "Hello! I turn video links into text.\n\n" + HELP

NO_LINK = (
    "I could not find a video link in that message. Send a link starting with http:// or "
    "https://, or paste the share text from the video app as it is. /help shows an example."
)

SOMETHING_WENT_WRONG = "Sorry, something went wrong on my side. Please try again in a moment."

UNKNOWN_COMMAND = "I don't know that command. /help lists what I can do."

STATUS_USAGE = "Send /status followed by a task number, for example: /status 12"

STATE_WORDS = {
    TaskState.PENDING: "queued",
    TaskState.PROCESSING: "extracting",
    TaskState.COMPLETED: "done",
    TaskState.FAILED: "failed",
    TaskState.TIMEOUT: "timed out",
}

# Failure kinds (tasks.FailureKind, coze ErrorClass) in words a user understands.
FAILURE_WORDS = {
    "workflow_failed": (
        "The video could not be turned into text. It may be private, deleted, region-locked, "
        "or from a site that is not supported."
    ),
    "no_text": "No speech or text was found in this video.",
    "coze_busy": "The text service is busy right now. Please try again in a minute.",
    "coze_config": (
        "The bot's text service is not set up correctly. The operator has been told; "
        "please try again later."
    ),
    "coze_plan": (
        "The bot's text service plan does not allow this right now. The operator has been "
        "told; please try again later."
    ),
    "coze_quota": (
        "The bot has used up its quota of the text service. The operator has been told; "
        "please try again later."
    ),
    "coze_error": "The text service refused the request. Please try again later.",
    "timeout": "This took too long and was stopped.",
}
GENERIC_FAILURE = "Something went wrong while extracting the text."


def accepted(
    tasks: list[Task],
    skipped: int,
    *,
    places: dict[int, int] | None = None,
    over_quota: str | None = None,
) -> str:
    """The acknowledgement. `places`: queued tasks' places in line; `over_quota`: why some
    links of the message were not taken."""
    if len(tasks) == 1:
        text = (
            f"Got it! Task #{tasks[0].id} is on its way. I'll send the text here when it's ready."
        )
    else:
        numbers = ", ".join(f"#{task.id}" for task in tasks)
        text = f"Got it! Tasks {numbers} are on their way. I'll send each text here when ready."
    for task in tasks:
        place = (places or {}).get(task.id)
        if place is not None:
            text += f"\n#{task.id} is queued: the bot is busy, and it is number {place} in line."
    if skipped:
        text += f"\n({skipped} more link(s) skipped: send them in another message.)"
    if over_quota:
        text += f"\n{over_quota}"
    return text


def too_many_active(active: int) -> str:
    return (
        f"You already have {active} task(s) running. Please wait until one of them is done, "
        "then send the link again."
    )


def active_limit(limit: int) -> str:
    return f"you can have at most {limit} tasks running at once."


def daily_limit(limit: int, next_possible_at: dt.datetime | None) -> str:
    text = f"You have reached the limit of {limit} tasks in 24 hours."
    if next_possible_at is not None:
        text += f" Your next task will be possible at {_when(next_possible_at)}."
    return text


def links_not_taken(count: int, reason: str) -> str:
    return f"{count} link(s) not taken: {reason}"


SLOW_DOWN = (
    "You are sending messages too fast. I'll ignore new messages for a minute; "
    "please send your links more slowly."
)
NOT_ALLOWED = "Sorry, this bot is private and only open to invited users."

ADMIN_ONLY = "This command is for the bot's admins."
BLOCK_USAGE = "Send /block ID or /unblock ID with a Telegram user id, for example: /block 12345"


def blocked(user_id: int, changed: bool) -> str:
    return f"User {user_id} is blocked." if changed else f"User {user_id} was already blocked."


def unblocked(user_id: int, changed: bool) -> str:
    return f"User {user_id} is unblocked." if changed else f"User {user_id} was not blocked."


CANNOT_BLOCK_ADMIN = "Admins cannot be blocked."
TRIMMED_NOTE = "(Coze cut this text: it was too long to come back whole.)"


def accepted_with_progress(tasks: list[Task]) -> str:
    """The acknowledgement, edited to show how far each task has come."""
    lines = [accepted(tasks, 0), ""]
    for task in tasks:
        if task.state == TaskState.PROCESSING:
            lines.append(f"#{task.id}: {task.progress}% done")
        else:
            lines.append(f"#{task.id}: {STATE_WORDS[task.state]}")
    return "\n".join(lines)


def result_header(task: Task) -> str:
    header = f"Task #{task.id} - text of {task.input_url}"
    if task.output_trimmed:
        header += "\n" + TRIMMED_NOTE
    return header


def document_caption(task: Task, preview: str) -> str:
    return f"Task #{task.id}: the text is long, so here it is as a file.\n\n{preview}"


# What a workflow's own failure message usually means, by the words in it (Coze's plugins
# report in English or Chinese), in words a user understands. The first match wins.
WORKFLOW_FAILURE_HINTS: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(r"private|permission|forbidden|login|log in|sign in|私密|权限|登录", re.I),
        "The video is private or needs a login, so it cannot be read.",
    ),
    (
        re.compile(r"not found|404|deleted|removed|no longer|unavailable|不存在|已删除|失效", re.I),
        "The video was not found. It may have been deleted, or the link is incomplete.",
    ),
    (
        re.compile(r"not supported|unsupported|不支持", re.I),
        "This site or kind of link is not supported.",
    ),
    (
        re.compile(r"too long|duration|时长", re.I),
        "The video is too long to be turned into text.",
    ),
    (
        re.compile(r"timed? ?out|超时", re.I),
        "Reading the video took too long. It may work if you try again.",
    ),
)


def failure_words(task: Task) -> str:
    if task.state == TaskState.TIMEOUT:
        return FAILURE_WORDS["timeout"]
    if task.error_kind == "workflow_failed" and task.error_detail:
        for pattern, words in WORKFLOW_FAILURE_HINTS:
            if pattern.search(task.error_detail):
                return words
    return FAILURE_WORDS.get(task.error_kind or "", GENERIC_FAILURE)


def failure(task: Task, reason: str | None = None) -> str:
    text = f"Task #{task.id} failed: {failure_words(task)}"
    if reason:
        text += f"\nDetails: {reason}"
    return text + f"\nLink: {task.input_url}"


def retrying(task: Task, max_retries: int) -> str:
    return f"Retrying task #{task.id} ({task.retry_count} of {max_retries})..."


def no_retries_left(task: Task) -> str:
    return f"Task #{task.id} has no retries left. Send the link again to start a new task."


def busy(task: Task) -> str:
    return f"Task #{task.id} is already running. I'll send the text when it's ready."


BUTTON_NOT_YOURS = "This button is not for you, or the task no longer exists."
BUTTON_UNKNOWN = "This button is no longer valid."
RETRY_LABEL = "Retry"


def _when(moment: dt.datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC") if moment else "never"


def task_list(user: User | None, tasks: list[Task]) -> str:
    if not tasks:
        return "You have no tasks yet. Send me a video link to start one."
    lines = ["Your recent tasks:"]
    for task in tasks:
        lines.append(f"#{task.id} {STATE_WORDS[task.state]} - {task.input_url}")
    if user is not None:
        lines.append("")
        lines.append(f"Texts extracted: {user.extract_count} (last: {_when(user.last_extract_at)})")
    lines.append("/status N shows one task.")
    return "\n".join(lines)


def task_status(task: Task, max_retries: int) -> str:
    lines = [
        f"Task #{task.id}: {STATE_WORDS[task.state]}",
        f"Link: {task.input_url}",
        f"Created: {_when(task.created_at)}",
    ]
    if task.state == TaskState.PROCESSING and task.progress:
        lines.append(f"Progress: {task.progress}%")
    if task.state == TaskState.COMPLETED and task.result_text is not None:
        lines.append(f"Text: {len(task.result_text)} characters")
    if task.state in (TaskState.FAILED, TaskState.TIMEOUT):
        lines.append("Why: " + failure_words(task))
    lines.append(f"Retries used: {task.retry_count} of {max_retries}")
    return "\n".join(lines)


def no_such_task(number: int) -> str:
    return f"You have no task #{number}. /tasks lists yours."


def _period_lines(title: str, period: PeriodStats) -> list[str]:
    rate = period.success_rate
    median = period.median_seconds_to_text
    lines = [
        f"{title}: {period.tasks} task(s)",
        "  succeeded: "
        + (f"{rate:.0%} of {period.finished} finished" if rate is not None else "none finished"),
        "  median time from link to text: "
        + (f"{median:.0f} s" if median is not None else "no text yet"),
        f"  Coze calls: {period.coze_calls}",
    ]
    if period.failure_reasons:
        reasons = ", ".join(f"{reason} {count}" for reason, count in period.failure_reasons)
        lines.append(f"  top failures: {reasons}")
    if period.busiest_users:
        users = ", ".join(
            f"{user_id}{f' (@{name})' if name else ''} {count}"
            for user_id, name, count in period.busiest_users
        )
        lines.append(f"  busiest users: {users}")
    return lines


def stats(figures: Stats) -> str:
    lines = [
        *_period_lines("Today (UTC)", figures.today),
        "",
        *_period_lines("Last 7 days", figures.week),
        "",
        f"Outcomes waiting to be sent: {figures.outbox_backlog}",
        f"Tasks waiting for a Coze run: {figures.waiting_for_a_run}",
    ]
    return "\n".join(lines)


# Why a link was refused (bot.links.LinkRefusal values). Each is a complete sentence on its own.
LINK_REFUSED: dict[str, str] = {
    "not_http": "Only web links that start with http:// or https:// can be used.",
    "too_long": "The link is too long (more than 2,048 characters).",
    "credentials": "The link contains a user name or password.",
    "local_name": "The link points to a local or internal name, not to a public website.",
    "private_address": "The link points to a private or local address, not to a public website.",
    "host_not_allowed": "This bot only takes links from certain video sites, and this is not one.",
    "malformed": "The link is not a valid web address.",
}


def link_refused(reason_value: str) -> str:
    reason = LINK_REFUSED.get(reason_value, "The link cannot be used.")
    return (
        f"That link can't be used. {reason} Send a public video link, or paste the share text "
        "from the video app as it is."
    )
