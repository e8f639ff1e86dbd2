"""purchasing-power: daily customer purchasing-power predictions.

All pipeline logic lives here as plain functions over DataFrames and storage paths, importable
and testable without a running Airflow. The DAG in ``dags/`` only wires these functions together.
"""

__version__ = "0.1.0"
