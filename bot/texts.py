"""What the bot says, in the user's language. All plain text: nothing is sent with a parse mode.

Every sentence is a message of the catalogues in bot/locales (gettext .po files, managed with
Babel: see bot.i18n); the English text is the message id. `for_language(lang)` gives the
texts of one language. Placeholders are Python's named `%(name)s`, so Babel's checker can
compare them between the languages.
"""

from __future__ import annotations

import datetime as dt
import gettext
import re
from collections.abc import Callable
from functools import cache

from bot.i18n import DEFAULT_LANGUAGE, translations
from storage import Task, TaskState, User
from tasks.stats import PeriodStats, Stats

SHARE_TEXT_EXAMPLE = (
    "7.43 复制打开抖音，看看【某某的作品】今天的视频 https://v.douyin.com/iRNBho6u/"
)

# Messages the extractor must see as messages, though they are looked up by key at run time.
_: Callable[[str], str] = lambda message: message  # noqa: E731


# What a workflow's own failure message usually means, by the words in it (Coze's plugins
# report in English or Chinese). The first match wins.
WORKFLOW_FAILURE_HINTS: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(r"private|permission|forbidden|login|log in|sign in|私密|权限|登录", re.I),
        _("The video is private or needs a login, so it cannot be read."),
    ),
    (
        re.compile(r"not found|404|deleted|removed|no longer|unavailable|不存在|已删除|失效", re.I),
        _("The video was not found. It may have been deleted, or the link is incomplete."),
    ),
    (
        re.compile(r"not supported|unsupported|不支持", re.I),
        _("This site or kind of link is not supported."),
    ),
    (
        re.compile(r"too long|duration|时长", re.I),
        _("The video is too long to be turned into text."),
    ),
    (
        re.compile(r"timed? ?out|超时", re.I),
        _("Reading the video took too long. It may work if you try again."),
    ),
)

# Failure kinds (tasks.FailureKind, coze ErrorClass) in words a user understands.
FAILURE_WORDS = {
    "workflow_failed": _(
        "The video could not be turned into text. It may be private, deleted, region-locked, "
        "or from a site that is not supported."
    ),
    "no_text": _("No speech or text was found in this video."),
    "coze_busy": _("The text service is busy right now. Please try again in a minute."),
    "coze_config": _(
        "The bot's text service is not set up correctly. The operator has been told; "
        "please try again later."
    ),
    "coze_plan": _(
        "The bot's text service plan does not allow this right now. The operator has been "
        "told; please try again later."
    ),
    "coze_quota": _(
        "The bot has used up its quota of the text service. The operator has been told; "
        "please try again later."
    ),
    "coze_error": _("The text service refused the request. Please try again later."),
    "timeout": _("This took too long and was stopped."),
}

STATE_WORDS = {
    TaskState.PENDING: _("queued"),
    TaskState.PROCESSING: _("extracting"),
    TaskState.COMPLETED: _("done"),
    TaskState.FAILED: _("failed"),
    TaskState.TIMEOUT: _("timed out"),
}

# Why a link was refused (bot.links.LinkRefusal values). Each is a complete sentence on its own.
LINK_REFUSED: dict[str, str] = {
    "not_http": _("Only web links that start with http:// or https:// can be used."),
    "too_long": _("The link is too long (more than 2,048 characters)."),
    "credentials": _("The link contains a user name or password."),
    "local_name": _("The link points to a local or internal name, not to a public website."),
    "private_address": _("The link points to a private or local address, not to a public website."),
    "host_not_allowed": _(
        "This bot only takes links from certain video sites, and this is not one."
    ),
    "malformed": _("The link is not a valid web address."),
}

del _


#: How much of a /find query is repeated in its answer.
SHOWN_QUERY = 100


def number_of(task: Task) -> int:
    """The number the user knows the task by: their own (#1 is their first task)."""
    return task.user_number if task.user_number is not None else task.id


def _when(moment: dt.datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC") if moment else "-"


class Texts:
    """The texts of one language."""

    def __init__(self, language: str, catalogue: gettext.NullTranslations) -> None:
        self.language = language
        self._catalogue = catalogue

    def _(self, message: str) -> str:
        return self._catalogue.gettext(message)

    def _n(self, singular: str, plural: str, count: int) -> str:
        return self._catalogue.ngettext(singular, plural, count)

    # --- start and help ----------------------------------------------------------------------

    @property
    def help(self) -> str:
        return self._(
            "Send me a link to a video, or paste a platform's share text as it is, for "
            "example:\n%(example)s\n\n"
            "I answer at once with a task number, and send the video's text when it is ready "
            "(usually within a minute or two), with a Retry button in case it is not right.\n\n"
            "Known to work: Douyin (抖音), Kuaishou (快手), Xiaohongshu (小红书), "
            "Bilibili (哔哩哔哩), TikTok, YouTube. Other sites may work too.\n\n"
            "In a group, mention me with the link, or send it as a reply to one of my "
            "messages.\n\n"
            "Commands:\n"
            "/tasks - your tasks\n"
            "/status N - one task, by its number\n"
            "/get N - the text of task N again\n"
            "/find WORDS - search your texts\n"
            "/delete N - delete task N\n"
            "/forget - delete all your tasks and texts\n"
            "/settings - texts as messages or as files\n"
            "/lang - 中文 / English\n"
            "/help - this message"
        ) % {"example": SHARE_TEXT_EXAMPLE}

    @property
    def start(self) -> str:
        return self._("Hello! I turn video links into text.") + "\n\n" + self.help

    @property
    def description(self) -> str:
        """The bot's description (setMyDescription): what an empty chat shows."""
        return self._(
            "Paste a video link or a share text from Douyin, Bilibili, Kuaishou, Xiaohongshu, "
            "TikTok or YouTube, and I send back the video's text."
        )

    @property
    def short_description(self) -> str:
        return self._("Turns video links into text.")

    def commands(self) -> list[tuple[str, str]]:
        """The command menu: (command, description)."""
        return [
            ("help", self._("How to use this bot")),
            ("tasks", self._("Your tasks")),
            ("status", self._("One task: /status N")),
            ("get", self._("A task's text again: /get N")),
            ("find", self._("Search your texts: /find WORDS")),
            ("settings", self._("Texts as messages or as files")),
            ("lang", self._("Language: 中文 / English")),
        ]

    # --- simple answers ----------------------------------------------------------------------

    @property
    def no_link(self) -> str:
        return self._(
            "I could not find a video link in that message. Send a link starting with http:// "
            "or https://, or paste the share text from the video app as it is. /help shows an "
            "example."
        )

    @property
    def something_went_wrong(self) -> str:
        return self._("Sorry, something went wrong on my side. Please try again in a moment.")

    @property
    def unknown_command(self) -> str:
        return self._("I don't know that command. /help lists what I can do.")

    @property
    def status_usage(self) -> str:
        return self._("Send /status followed by a task number, for example: /status 12")

    def usage(self, command: str) -> str:
        return self._(
            "Send /%(command)s followed by a task number, for example: /%(command)s 3"
        ) % {"command": command}

    def link_refused(self, reason_value: str) -> str:
        reason = LINK_REFUSED.get(reason_value)
        words = self._(reason) if reason else self._("The link cannot be used.")
        return (
            self._("That link can't be used.")
            + " "
            + words
            + " "
            + self._(
                "Send a public video link, or paste the share text from the video app as it is."
            )
        )

    # --- acknowledgement and progress --------------------------------------------------------

    def accepted(
        self,
        tasks: list[Task],
        skipped: int,
        *,
        places: dict[int, int] | None = None,
        over_quota: str | None = None,
    ) -> str:
        """The acknowledgement. `places`: queued tasks' places in line (by task id);
        `over_quota`: why some links of the message were not taken."""
        numbers = ", ".join(f"#{number_of(task)}" for task in tasks)
        text = self._n(
            "Got it! Task %(numbers)s is on its way. I'll send the text here when it's ready.",
            "Got it! Tasks %(numbers)s are on their way. I'll send each text here when ready.",
            len(tasks),
        ) % {"numbers": numbers}
        for task in tasks:
            place = (places or {}).get(task.id)
            if place is not None:
                text += "\n" + self._(
                    "#%(number)s is queued: the bot is busy, and it is number %(place)s in line."
                ) % {"number": number_of(task), "place": place}
        if skipped:
            text += "\n" + self._n(
                "(%(count)s more link skipped: send it in another message.)",
                "(%(count)s more links skipped: send them in another message.)",
                skipped,
            ) % {"count": skipped}
        if over_quota:
            text += f"\n{over_quota}"
        return text

    def accepted_with_progress(self, tasks: list[Task], moment: dt.datetime) -> str:
        """The acknowledgement, edited to show how far each task has come and for how long."""
        lines = [self.accepted(tasks, 0), ""]
        for task in tasks:
            elapsed = self.duration((moment - task.created_at).total_seconds())
            if task.state == TaskState.PROCESSING and task.progress:
                lines.append(
                    self._("#%(number)s: %(progress)s%% done, %(elapsed)s so far")
                    % {"number": number_of(task), "progress": task.progress, "elapsed": elapsed}
                )
            else:
                lines.append(
                    self._("#%(number)s: %(state)s, %(elapsed)s so far")
                    % {
                        "number": number_of(task),
                        "state": self.state(task.state),
                        "elapsed": elapsed,
                    }
                )
        return "\n".join(lines)

    def duration(self, seconds: float) -> str:
        seconds = max(0, int(seconds))
        if seconds < 60:
            return self._("%(seconds)s s") % {"seconds": seconds}
        if seconds < 3600:
            return self._("%(minutes)s min %(seconds)s s") % {
                "minutes": seconds // 60,
                "seconds": seconds % 60,
            }
        if seconds < 2 * 86400:
            return self._("%(hours)s h %(minutes)s min") % {
                "hours": seconds // 3600,
                "minutes": seconds % 3600 // 60,
            }
        return self._("%(days)s days") % {"days": seconds // 86400}

    def state(self, state: TaskState) -> str:
        return self._(STATE_WORDS[state])

    # --- quotas and access -------------------------------------------------------------------

    def too_many_active(self, active: int) -> str:
        return self._n(
            "You already have %(count)s task running. Please wait until it is done, then send "
            "the link again.",
            "You already have %(count)s tasks running. Please wait until one of them is done, "
            "then send the link again.",
            active,
        ) % {"count": active}

    def active_limit(self, limit: int) -> str:
        return self._("you can have at most %(limit)s tasks running at once.") % {"limit": limit}

    def daily_limit(self, limit: int, next_possible_at: dt.datetime | None) -> str:
        text = self._("You have reached the limit of %(limit)s tasks in 24 hours.") % {
            "limit": limit
        }
        if next_possible_at is not None:
            text += " " + self._("Your next task will be possible at %(when)s.") % {
                "when": _when(next_possible_at)
            }
        return text

    def links_not_taken(self, count: int, reason: str) -> str:
        return self._n(
            "%(count)s link not taken: %(reason)s",
            "%(count)s links not taken: %(reason)s",
            count,
        ) % {"count": count, "reason": reason}

    @property
    def slow_down(self) -> str:
        return self._(
            "You are sending messages too fast. I'll ignore new messages for a minute; "
            "please send your links more slowly."
        )

    @property
    def not_allowed(self) -> str:
        return self._("Sorry, this bot is private and only open to invited users.")

    @property
    def block_usage(self) -> str:
        return self._(
            "Send /block ID or /unblock ID with a Telegram user id, for example: /block 12345"
        )

    def blocked(self, user_id: int, changed: bool) -> str:
        if changed:
            return self._("User %(user)s is blocked.") % {"user": user_id}
        return self._("User %(user)s was already blocked.") % {"user": user_id}

    def unblocked(self, user_id: int, changed: bool) -> str:
        if changed:
            return self._("User %(user)s is unblocked.") % {"user": user_id}
        return self._("User %(user)s was not blocked.") % {"user": user_id}

    @property
    def cannot_block_admin(self) -> str:
        return self._("Admins cannot be blocked.")

    # --- results and failures ----------------------------------------------------------------

    @property
    def trimmed_note(self) -> str:
        return self._("(Coze cut this text: it was too long to come back whole.)")

    def result_header(self, task: Task) -> str:
        header = self._("Task #%(number)s - text of %(link)s") % {
            "number": number_of(task),
            "link": task.input_url,
        }
        if task.output_trimmed:
            header += "\n" + self.trimmed_note
        return header

    def reused_header(self, task: Task, age_seconds: float) -> str:
        """A known video answered from an earlier extraction, with how old that one is."""
        return self._(
            "Task #%(number)s - text of %(link)s\n"
            "This video was extracted %(age)s ago; here is that text. Refresh extracts it anew."
        ) % {
            "number": number_of(task),
            "link": task.input_url,
            "age": self.duration(age_seconds),
        }

    def document_caption(self, task: Task, preview: str) -> str:
        caption = self._("Task #%(number)s: the text is long, so here it is as a file.") % {
            "number": number_of(task)
        }
        return f"{caption}\n\n{preview}" if preview else caption

    def file_caption(self, task: Task) -> str:
        return self._("Task #%(number)s") % {"number": number_of(task)}

    def failure_words(self, task: Task) -> str:
        if task.state == TaskState.TIMEOUT:
            return self._(FAILURE_WORDS["timeout"])
        if task.error_kind == "workflow_failed" and task.error_detail:
            for pattern, words in WORKFLOW_FAILURE_HINTS:
                if pattern.search(task.error_detail):
                    return self._(words)
        kind = FAILURE_WORDS.get(task.error_kind or "")
        return self._(kind) if kind else self._("Something went wrong while extracting the text.")

    def failure(self, task: Task, reason: str | None = None) -> str:
        text = self._("Task #%(number)s failed: %(why)s") % {
            "number": number_of(task),
            "why": self.failure_words(task),
        }
        if reason:
            text += "\n" + self._("Details: %(reason)s") % {"reason": reason}
        return text + "\n" + self._("Link: %(link)s") % {"link": task.input_url}

    # --- buttons -----------------------------------------------------------------------------

    @property
    def retry_label(self) -> str:
        return self._("Retry")

    @property
    def refresh_label(self) -> str:
        return self._("Refresh")

    @property
    def file_label(self) -> str:
        return self._("As a file")

    def retrying(self, task: Task, max_retries: int) -> str:
        return self._("Retrying task #%(number)s (%(used)s of %(max)s)...") % {
            "number": number_of(task),
            "used": task.retry_count,
            "max": max_retries,
        }

    def refreshing(self, task: Task) -> str:
        return self._("Extracting task #%(number)s anew...") % {"number": number_of(task)}

    def no_retries_left(self, task: Task) -> str:
        return self._(
            "Task #%(number)s has no retries left. Send the link again to start a new task."
        ) % {"number": number_of(task)}

    def busy(self, task: Task) -> str:
        return self._(
            "Task #%(number)s is already running. I'll send the text when it's ready."
        ) % {"number": number_of(task)}

    @property
    def button_not_yours(self) -> str:
        return self._("This button is not for you, or the task no longer exists.")

    @property
    def button_unknown(self) -> str:
        return self._("This button is no longer valid.")

    # --- the user's tasks --------------------------------------------------------------------

    def task_list(
        self, user: User | None, tasks: list[Task], *, first: int = 1, total: int = 0
    ) -> str:
        """A page of the user's tasks: the `first`-th newest onwards, of `total`."""
        if not tasks:
            return self._("You have no tasks yet. Send me a video link to start one.")
        title = self._("Your tasks (%(first)s-%(last)s of %(total)s, newest first):") % {
            "first": first,
            "last": first + len(tasks) - 1,
            "total": max(total, len(tasks)),
        }
        lines = [title]
        for task in tasks:
            lines.append(f"#{number_of(task)} {self.state(task.state)} - {task.input_url}")
        if user is not None:
            lines.append("")
            lines.append(
                self._("Texts extracted: %(count)s (last: %(when)s)")
                % {"count": user.extract_count, "when": _when(user.last_extract_at)}
            )
        lines.append(self._("/status N shows one task, /get N its text."))
        return "\n".join(lines)

    @property
    def older_label(self) -> str:
        return self._("« Older")

    @property
    def newer_label(self) -> str:
        return self._("Newer »")

    def task_status(self, task: Task, max_retries: int) -> str:
        lines = [
            self._("Task #%(number)s: %(state)s")
            % {"number": number_of(task), "state": self.state(task.state)},
            self._("Link: %(link)s") % {"link": task.input_url},
            self._("Created: %(when)s") % {"when": _when(task.created_at)},
        ]
        if task.state == TaskState.PROCESSING and task.progress:
            lines.append(self._("Progress: %(progress)s%%") % {"progress": task.progress})
        if task.state == TaskState.COMPLETED and task.result_text is not None:
            lines.append(self._("Text: %(count)s characters") % {"count": len(task.result_text)})
        if task.state in (TaskState.FAILED, TaskState.TIMEOUT):
            lines.append(self._("Why: %(why)s") % {"why": self.failure_words(task)})
        lines.append(
            self._("Retries used: %(used)s of %(max)s")
            % {"used": task.retry_count, "max": max_retries}
        )
        return "\n".join(lines)

    def no_such_task(self, number: int) -> str:
        return self._("You have no task #%(number)s. /tasks lists yours.") % {"number": number}

    def no_text_yet(self, task: Task) -> str:
        return self._("Task #%(number)s has no text (it is %(state)s).") % {
            "number": number_of(task),
            "state": self.state(task.state),
        }

    @property
    def find_usage(self) -> str:
        return self._("Send /find followed by words to look for, for example: /find 视频")

    def found(self, words: str, hits: list[tuple[int, str]], *, more: bool = False) -> str:
        """Search results: (task number, snippet) pairs; `more`: only the newest are shown."""
        if len(words) > SHOWN_QUERY:
            words = words[: SHOWN_QUERY - 1] + "…"
        if not hits:
            return self._("None of your texts contains “%(words)s”.") % {"words": words}
        if more:
            heading = self._("Your newest %(count)s texts that contain “%(words)s”:")
        else:
            heading = self._n(
                "%(count)s text contains “%(words)s”:",
                "%(count)s texts contain “%(words)s”:",
                len(hits),
            )
        lines = [heading % {"count": len(hits), "words": words}]
        for number, snippet in hits:
            lines.append(f"#{number}: {snippet}")
        lines.append(self._("/get N sends a whole text."))
        return "\n".join(lines)

    def confirm_delete(self, task: Task) -> str:
        return self._("Delete task #%(number)s and its text? This cannot be undone.") % {
            "number": number_of(task)
        }

    def confirm_forget(self, count: int, running: int = 0) -> str:
        text = self._n(
            "Delete your %(count)s task and its text? This cannot be undone.",
            "Delete all your %(count)s tasks and their texts? This cannot be undone.",
            count,
        ) % {"count": count}
        if running:
            text += " " + self._n(
                "(%(count)s task still running is kept.)",
                "(%(count)s tasks still running are kept.)",
                running,
            ) % {"count": running}
        return text

    @property
    def all_running(self) -> str:
        return self._("Your tasks are all still running: they can be deleted once they are done.")

    @property
    def delete_label(self) -> str:
        return self._("Delete")

    @property
    def cancel_label(self) -> str:
        return self._("Cancel")

    def deleted(self, number: int) -> str:
        return self._("Task #%(number)s is deleted.") % {"number": number}

    def forgotten(self, count: int) -> str:
        return self._n(
            "Done: %(count)s task and its text are deleted.",
            "Done: %(count)s tasks and their texts are deleted.",
            count,
        ) % {"count": count}

    @property
    def cancelled(self) -> str:
        return self._("Nothing was deleted.")

    # --- settings and language ---------------------------------------------------------------

    def settings(self, always_as_file: bool) -> str:
        if always_as_file:
            return self._("Texts come as .txt files.")
        return self._("Texts come as messages (long ones as .txt files).")

    @property
    def as_messages_label(self) -> str:
        return self._("Texts as messages")

    @property
    def as_files_label(self) -> str:
        return self._("Always as a file")

    @property
    def choose_language(self) -> str:
        return self._("Choose a language:")

    @property
    def language_set(self) -> str:
        return self._("I'll speak English from now on.")

    # --- admins ------------------------------------------------------------------------------

    def _period_lines(self, title: str, period: PeriodStats) -> list[str]:
        rate = period.success_rate
        median = period.median_seconds_to_text
        lines = [
            self._("%(title)s: %(count)s task(s)") % {"title": title, "count": period.tasks},
            "  "
            + (
                self._("succeeded: %(rate)s of %(finished)s finished")
                % {"rate": f"{rate:.0%}", "finished": period.finished}
                if rate is not None
                else self._("succeeded: none finished")
            ),
            "  "
            + (
                self._("median time from link to text: %(seconds)s s")
                % {"seconds": f"{median:.0f}"}
                if median is not None
                else self._("median time from link to text: no text yet")
            ),
            "  " + self._("Coze calls: %(count)s") % {"count": period.coze_calls},
        ]
        if period.failure_reasons:
            reasons = ", ".join(f"{reason} {count}" for reason, count in period.failure_reasons)
            lines.append("  " + self._("top failures: %(reasons)s") % {"reasons": reasons})
        if period.busiest_users:
            users = ", ".join(
                f"{user_id}{f' (@{name})' if name else ''} {count}"
                for user_id, name, count in period.busiest_users
            )
            lines.append("  " + self._("busiest users: %(users)s") % {"users": users})
        return lines

    def stats(self, figures: Stats) -> str:
        lines = [
            *self._period_lines(self._("Today (UTC)"), figures.today),
            "",
            *self._period_lines(self._("Last 7 days"), figures.week),
            "",
            self._("Outcomes waiting to be sent: %(count)s") % {"count": figures.outbox_backlog},
            self._("Tasks waiting for a Coze run: %(count)s")
            % {"count": figures.waiting_for_a_run},
        ]
        return "\n".join(lines)


@cache
def for_language(language: str) -> Texts:
    """The texts of `language` ("en" or "zh"); any other gives the default language's."""
    return Texts(language, translations(language))


#: The default language's texts, for places that know no user (logs aside, nothing else).
DEFAULT = for_language(DEFAULT_LANGUAGE)
