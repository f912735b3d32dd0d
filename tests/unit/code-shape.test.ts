// Issue 18: "the largest source file is at most ~350 lines; no function is over ~60 lines".
// A reader who comes to change one thing should find it in a file that holds one concern
// and a function that fits on a screen. This test keeps it so: it parses every TypeScript
// file in src/, provider/ and bench/ with the compiler API and names each file and each function
// (declaration, method, constructor, accessor, function expression or arrow) past the bound.
import * as fs from "fs";
import * as path from "path";
import * as ts from "typescript";
import { repoRoot } from "../support/repo";

const MAX_FILE_LINES = 350;
const MAX_FUNCTION_LINES = 60;
const FOLDERS = ["src", "provider", "bench"];

function sourceFiles(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const full = path.join(dir, e.name);
    if (e.isDirectory()) return sourceFiles(full);
    return e.name.endsWith(".ts") && !e.name.endsWith(".d.ts") ? [full] : [];
  });
}

/** The name a reader would search for: `Class.method`, `name` of `const name = () => ...`, else the line. */
function nameOf(node: ts.Node): string {
  const named = node as ts.Node & { name?: ts.Node };
  let name = named.name && (ts.isIdentifier(named.name) || ts.isStringLiteral(named.name)) ? named.name.text : undefined;
  if (ts.isConstructorDeclaration(node)) name = "constructor";
  const parent = node.parent;
  if (!name && parent && (ts.isVariableDeclaration(parent) || ts.isPropertyAssignment(parent) || ts.isPropertyDeclaration(parent)) && ts.isIdentifier(parent.name)) name = parent.name.text;
  const owner = node.parent && ts.isClassLike(node.parent) && node.parent.name ? `${node.parent.name.text}.` : "";
  return name ? `${owner}${name}` : `<anonymous ${ts.SyntaxKind[node.kind]}>`;
}

interface Oversized {
  where: string;
  lines: number;
}

function oversizedFunctions(file: string, root: string): Oversized[] {
  const source = ts.createSourceFile(file, fs.readFileSync(file, "utf8"), ts.ScriptTarget.ES2022, true);
  const found: Oversized[] = [];
  const visit = (node: ts.Node): void => {
    if (ts.isFunctionLike(node) && (node as ts.FunctionLikeDeclaration).body) {
      const first = source.getLineAndCharacterOfPosition(node.getStart(source)).line;
      const last = source.getLineAndCharacterOfPosition(node.getEnd()).line;
      const lines = last - first + 1;
      if (lines > MAX_FUNCTION_LINES) found.push({ where: `${path.relative(root, file)}:${first + 1} ${nameOf(node)}`, lines });
    }
    ts.forEachChild(node, visit);
  };
  visit(source);
  return found;
}

const root = repoRoot();
const files = FOLDERS.flatMap((f) => sourceFiles(path.join(root, f))).sort();

test("the tree has files to check (the walk found src/ and provider/)", () => {
  expect(files.some((f) => f.endsWith(path.join("src", "plan.ts")))).toBe(true);
  expect(files.some((f) => f.endsWith(path.join("provider", "resource.ts")))).toBe(true);
});

test(`no source file in ${FOLDERS.join("/, ")}/ is over ${MAX_FILE_LINES} lines`, () => {
  const big = files
    .map((f) => ({ where: path.relative(root, f), lines: fs.readFileSync(f, "utf8").split("\n").length - 1 }))
    .filter((f) => f.lines > MAX_FILE_LINES)
    .map((f) => `${f.where} (${f.lines} lines)`);
  expect(big).toEqual([]);
});

test(`no function in ${FOLDERS.join("/, ")}/ is over ${MAX_FUNCTION_LINES} lines`, () => {
  const long = files.flatMap((f) => oversizedFunctions(f, root)).map((f) => `${f.where} (${f.lines} lines)`);
  expect(long).toEqual([]);
});
