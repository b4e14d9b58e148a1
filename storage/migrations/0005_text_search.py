"""Search in the users' texts (/find, storage.history.search_texts) needs no schema change: it
reads one user's completed tasks through the (user_id, user_number) index that 0004 made, and
matches each word with a parameterised LIKE. This step is kept so the chain stays as planned.

No FTS5 index, on purpose: it would have to follow tasks.result_text through triggers, and
Tortoise's SQLite client reports the rows an UPDATE changed as the connection's
total_changes, which counts the rows written by triggers as well (an FTS5 'delete' plus an
insert turn 1 row into 9). Every `updated == 1` check of the task state machine would then
fail, e.g. a callback's text would be ignored. Do not add triggers on tables whose UPDATE or
DELETE counts the code reads.
"""

from tortoise import migrations


class Migration(migrations.Migration):
    dependencies = [('models', '0004_people_numbers_videos')]

    initial = False

    operations = []
