"""Task-system integrations, one subpackage each, behind progress.taskqueue.TaskQueue."""
