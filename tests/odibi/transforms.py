"""The project's transform functions: Odibi imports transforms.py beside config.yaml."""

from pipectl.compat.odibi import transform


@transform
def strip_names(context, current):
    current = current.copy()
    current["name"] = current["name"].str.strip().str.title()
    return current


@transform
def revenue_by_customer(context, current, customers):
    totals = current.groupby("customer_id", as_index=False)["amount"].sum()
    joined = context.get(customers).merge(totals, on="customer_id", how="left")
    return joined.fillna({"amount": 0.0}).rename(columns={"amount": "revenue"})
