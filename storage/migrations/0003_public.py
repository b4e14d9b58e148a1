"""Poisoned updates set aside in the inbox; Coze's trimmed output noted on a task; blocks by
admins; indexes for the per-user quotas."""

from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise import fields

class Migration(migrations.Migration):
    dependencies = [('models', '0002_inbox_reconcile_delivery')]

    initial = False

    operations = [
        ops.CreateModel(
            name='UserAccess',
            fields=[
                ('user_id', fields.BigIntField(primary_key=True, unique=True, db_index=True)),
                ('blocked', fields.BooleanField()),
                ('changed_by', fields.BigIntField()),
                ('changed_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
            ],
            options={'table': 'user_access', 'app': 'models', 'pk_attr': 'user_id'},
            bases=['Model'],
        ),
        ops.AddField(
            model_name='InboxUpdate',
            name='poisoned',
            field=fields.BooleanField(default=False, db_default=False),
        ),
        ops.AddField(
            model_name='Task',
            name='output_trimmed',
            field=fields.BooleanField(default=False, db_default=False),
        ),
    ]
