"""Users' languages and settings, each user's own task numbers (existing tasks numbered in
order), and which video a task's link shows (for answering a known video at once)."""

from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise import fields
from tortoise.indexes import Index
from tortoise.migrations.constraints import UniqueConstraint

class Migration(migrations.Migration):
    dependencies = [('models', '0003_public')]

    initial = False

    operations = [
        ops.CreateModel(
            name='RunSpent',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('user_id', fields.BigIntField()),
                ('spent_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'runs_spent', 'app': 'models', 'indexes': [Index(fields=['user_id', 'spent_at'])], 'pk_attr': 'id'},
            bases=['Model'],
        ),
        ops.AddField(
            model_name='Task',
            name='reused_from',
            field=fields.IntField(null=True),
        ),
        ops.AddField(
            model_name='Task',
            name='text_made_at',
            field=fields.DatetimeField(null=True, auto_now=False, auto_now_add=False),
        ),
        ops.AddField(
            model_name='Task',
            name='user_number',
            field=fields.IntField(null=True),
        ),
        ops.AddField(
            model_name='Task',
            name='video_key',
            field=fields.CharField(null=True, max_length=255),
        ),
        ops.AddField(
            model_name='User',
            name='always_as_file',
            field=fields.BooleanField(default=False, db_default=False),
        ),
        ops.AddField(
            model_name='User',
            name='language',
            field=fields.CharField(null=True, max_length=8),
        ),
        ops.AddField(
            model_name='User',
            name='language_code',
            field=fields.CharField(null=True, max_length=35),
        ),
        ops.AddField(
            model_name='User',
            name='last_task_number',
            field=fields.IntField(default=0, db_default=0),
        ),
        # Tasks stored before this migration get their user's numbers in the order they came.
        ops.RunSQL(
            [
                "UPDATE tasks SET user_number = (SELECT COUNT(*) FROM tasks AS earlier"
                " WHERE earlier.user_id = tasks.user_id AND earlier.id <= tasks.id)",
                "INSERT INTO runs_spent (user_id, spent_at) SELECT tasks.user_id,"
                " task_runs.created_at FROM task_runs JOIN tasks ON tasks.id = task_runs.task_id",
                "UPDATE users SET last_task_number = (SELECT COALESCE(MAX(user_number), 0)"
                " FROM tasks WHERE tasks.user_id = users.id)",
            ],
            reverse_sql=[],
        ),
        ops.AddIndex(
            model_name='Task',
            index=Index(fields=['video_key', 'state']),
        ),
        ops.AddConstraint(
            model_name='Task',
            constraint=UniqueConstraint(fields=('user_id', 'user_number'), name=None),
        ),
    ]
