// The managers' "Tasks from proposals" button (review.html, shown to managers): findings and review tasks
// for the newest label run's findings, each starting from the region proposal that fits it, and a start
// for waiting findings whose proposals arrived since (POST findings/from-proposals, annotation/proposals.py).
import { postJson } from "./api";
import { root, say, slug } from "./page";

/** Whether the page is a manager's (annotation/ui.py sets data-manager). */
export const isManager = root.dataset.manager === "1";

type Made = { created: number; started: number; attached: number; rules: Record<string, number>; with_context: number };

export async function tasksFromProposals(): Promise<void> {
  if (!isManager) throw new Error("Only the project's managers make review tasks from proposals.");
  say("Making review tasks from the proposals…");
  const made = (await postJson(`/api/projects/${encodeURIComponent(slug)}/findings/from-proposals/`, {})) as Made;
  const rules = Object.entries(made.rules)
    .map(([rule, n]) => `${rule} ${n}`)
    .join(", ");
  const starts = made.started + made.attached ? ` (starts by ${rules})` : "";
  say(
    `Made ${made.created} review task${made.created === 1 ? "" : "s"}, ${made.started} starting from a proposal; ` +
      `${made.attached} waiting finding${made.attached === 1 ? "" : "s"} got a start${starts}. ` +
      `${made.with_context} show anatomy context. Press n for the next case.`,
    "ok",
  );
  root.dataset.made = JSON.stringify(made);
}
