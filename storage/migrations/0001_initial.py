from tortoise import migrations
from tortoise.migrations import operations as ops
from storage.models import TaskState
from tortoise.fields.base import OnDelete
from tortoise import fields

class Migration(migrations.Migration):
    initial = True

    operations = [
        ops.CreateModel(
            name='User',
            fields=[
                ('id', fields.BigIntField(primary_key=True, unique=True, db_index=True)),
                ('username', fields.CharField(null=True, max_length=64)),
                ('first_name', fields.CharField(default='', max_length=128)),
                ('extract_count', fields.IntField(default=0)),
                ('last_extract_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
            ],
            options={'table': 'users', 'app': 'models', 'pk_attr': 'id'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='Task',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('user', fields.ForeignKeyField('models.User', source_field='user_id', db_constraint=True, to_field='id', related_name='tasks', on_delete=OnDelete.CASCADE)),
                ('chat_id', fields.BigIntField()),
                ('request_message_id', fields.BigIntField()),
                ('ack_message_id', fields.BigIntField(null=True)),
                ('input_url', fields.CharField(max_length=2048)),
                ('run_id', fields.CharField(unique=True, max_length=64)),
                ('state', fields.CharEnumField(default=TaskState.PENDING, db_index=True, description='PENDING: pending\nPROCESSING: processing\nCOMPLETED: completed\nFAILED: failed\nTIMEOUT: timeout', enum_type=TaskState, max_length=16)),
                ('execute_id', fields.CharField(null=True, max_length=64)),
                ('result_text', fields.TextField(null=True, unique=False)),
                ('error_kind', fields.CharField(null=True, max_length=32)),
                ('error_detail', fields.TextField(null=True, unique=False)),
                ('progress', fields.IntField(default=0)),
                ('retry_count', fields.IntField(default=0)),
                ('callback_received', fields.BooleanField(default=False)),
                ('counted', fields.BooleanField(default=False)),
                ('notification_sent', fields.BooleanField(default=False, db_index=True)),
                ('undeliverable', fields.BooleanField(default=False)),
                ('delivery_attempts', fields.IntField(default=0)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
                ('started_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('completed_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('expires_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('notified_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'tasks', 'app': 'models', 'pk_attr': 'id'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='TaskRun',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('run_id', fields.CharField(unique=True, max_length=64)),
                ('task', fields.ForeignKeyField('models.Task', source_field='task_id', db_constraint=True, to_field='id', related_name='runs', on_delete=OnDelete.CASCADE)),
                ('execute_id', fields.CharField(null=True, max_length=64)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'task_runs', 'app': 'models', 'pk_attr': 'id'},
            bases=['Model'],
        ),
    ]
