"""The inbox of Telegram updates; reconciliation schedule, delivery bookkeeping and progress
edits for tasks."""

from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise import fields
from tortoise.indexes import Index

class Migration(migrations.Migration):
    dependencies = [('models', '0001_initial')]

    initial = False

    operations = [
        ops.CreateModel(
            name='InboxUpdate',
            fields=[
                ('update_id', fields.BigIntField(primary_key=True, unique=True, db_index=True)),
                ('payload', fields.TextField(unique=False)),
                ('handled', fields.BooleanField(default=False)),
                ('received_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'inbox_updates', 'app': 'models', 'pk_attr': 'update_id'},
            bases=['Model'],
        ),
        ops.AddField(
            model_name='Task',
            name='checks',
            field=fields.IntField(default=0, db_default=0),
        ),
        ops.AddField(
            model_name='Task',
            name='deliver_after',
            field=fields.DatetimeField(null=True, auto_now=False, auto_now_add=False),
        ),
        ops.AddField(
            model_name='Task',
            name='delivered_parts',
            field=fields.IntField(default=0, db_default=0),
        ),
        ops.AddField(
            model_name='Task',
            name='next_check_at',
            field=fields.DatetimeField(null=True, auto_now=False, auto_now_add=False),
        ),
        ops.AddField(
            model_name='Task',
            name='payload_level',
            field=fields.IntField(default=0, db_default=0),
        ),
        ops.AddField(
            model_name='Task',
            name='progress_edited_at',
            field=fields.DatetimeField(null=True, auto_now=False, auto_now_add=False),
        ),
        ops.AddField(
            model_name='Task',
            name='progress_shown',
            field=fields.IntField(default=0, db_default=0),
        ),
        ops.AddField(
            model_name='Task',
            name='resent_after_crash',
            field=fields.BooleanField(default=False, db_default=False),
        ),
        ops.AddField(
            model_name='Task',
            name='send_started_at',
            field=fields.DatetimeField(null=True, auto_now=False, auto_now_add=False),
        ),
        ops.AddField(
            model_name='Task',
            name='send_timed_out',
            field=fields.BooleanField(default=False, db_default=False),
        ),
    ]
