"""Claims across instances: leases on tasks (a run being started or checked), on stored
Telegram updates (being handled) and on chats (being delivered to)."""

from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise import fields

class Migration(migrations.Migration):
    dependencies = [('models', '0004_people_numbers_videos')]

    initial = False

    operations = [
        ops.CreateModel(
            name='ChatLease',
            fields=[
                ('chat_id', fields.BigIntField(primary_key=True, generated=False)),
                ('holder', fields.CharField(max_length=64)),
                ('until', fields.DatetimeField(auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'chat_leases', 'app': 'models', 'pk_attr': 'chat_id'},
            bases=['Model'],
        ),
        ops.AddField(
            model_name='InboxUpdate',
            name='claim_until',
            field=fields.DatetimeField(null=True, auto_now=False, auto_now_add=False),
        ),
        ops.AddField(
            model_name='InboxUpdate',
            name='claimed_by',
            field=fields.CharField(null=True, max_length=64),
        ),
        ops.AddField(
            model_name='Task',
            name='lease_holder',
            field=fields.CharField(null=True, max_length=64),
        ),
        ops.AddField(
            model_name='Task',
            name='lease_until',
            field=fields.DatetimeField(null=True, auto_now=False, auto_now_add=False),
        ),
    ]
